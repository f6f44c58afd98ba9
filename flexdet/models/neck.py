"""YOLOX PAFPN over the strides 8/16/32: top-down then bottom-up path aggregation with CSP blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flexdet.models.layers import ConvBNAct, CSPLayer


class PAFPN(nn.Module):
    """(P3, P4, P5) with widths (c3, c4, c5) -> three maps of the same widths and strides."""

    def __init__(self, widths: tuple[int, int, int], depth: int = 1, eps: float = 1e-3) -> None:
        super().__init__()
        c3, c4, c5 = widths
        self.lateral5 = ConvBNAct(c5, c4, 1, eps=eps)
        self.top_down4 = CSPLayer(2 * c4, c4, depth, eps=eps)
        self.lateral4 = ConvBNAct(c4, c3, 1, eps=eps)
        self.top_down3 = CSPLayer(2 * c3, c3, depth, eps=eps)
        self.down3 = ConvBNAct(c3, c3, 3, stride=2, eps=eps)
        self.bottom_up4 = CSPLayer(2 * c3, c4, depth, eps=eps)
        self.down4 = ConvBNAct(c4, c4, 3, stride=2, eps=eps)
        self.bottom_up5 = CSPLayer(2 * c4, c5, depth, eps=eps)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = features
        lat5 = self.lateral5(p5)
        td4 = self.top_down4(torch.cat([F.interpolate(lat5, scale_factor=2.0, mode="nearest"), p4], dim=1))
        lat4 = self.lateral4(td4)
        out3 = self.top_down3(torch.cat([F.interpolate(lat4, scale_factor=2.0, mode="nearest"), p3], dim=1))
        out4 = self.bottom_up4(torch.cat([self.down3(out3), lat4], dim=1))
        out5 = self.bottom_up5(torch.cat([self.down4(out4), lat5], dim=1))
        return [out3, out4, out5]
