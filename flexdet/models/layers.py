"""Conv + BatchNorm + SiLU building blocks of the YOLOX neck and head."""

from __future__ import annotations

import torch
from torch import nn


class ConvBNAct(nn.Module):
    """Conv2d (no bias) + BatchNorm + SiLU, YOLOX's BaseConv."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 1, stride: int = 1, eps: float = 1e-3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_dim, eps=eps, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 then 3x3 ConvBNAct with an optional residual connection."""

    def __init__(self, dim: int, shortcut: bool, eps: float = 1e-3) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(dim, dim, 1, eps=eps)
        self.conv2 = ConvBNAct(dim, dim, 3, eps=eps)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class CSPLayer(nn.Module):
    """Cross-stage-partial block: two half-width branches, one through `depth` bottlenecks, then merged."""

    def __init__(self, in_dim: int, out_dim: int, depth: int = 1, shortcut: bool = False, eps: float = 1e-3
                 ) -> None:
        super().__init__()
        hidden = out_dim // 2
        self.branch_main = ConvBNAct(in_dim, hidden, 1, eps=eps)
        self.branch_skip = ConvBNAct(in_dim, hidden, 1, eps=eps)
        self.blocks = nn.Sequential(*(Bottleneck(hidden, shortcut, eps) for _ in range(depth)))
        self.merge = ConvBNAct(2 * hidden, out_dim, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([self.blocks(self.branch_main(x)), self.branch_skip(x)], dim=1))
