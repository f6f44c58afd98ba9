"""YOLOX decoupled head (classification / regression / objectness branches) and anchor-point box decoding."""

from __future__ import annotations

import math

import torch
from torch import nn

from flexdet.models.layers import ConvBNAct

PRIOR_PROB = 0.01
MAX_LOG_SIZE = 10.0  # exp(10) * stride is far beyond any image; keeps exp finite early in training


class YOLOXHead(nn.Module):
    """Per level: 1x1 stem, two 3x3 convs for cls, two for reg; predicts (reg 4, obj 1, cls K) logits."""

    def __init__(self, in_widths: tuple[int, ...], num_classes: int, width: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stems = nn.ModuleList(ConvBNAct(c, width, 1, eps=eps) for c in in_widths)
        self.cls_convs = nn.ModuleList(nn.Sequential(ConvBNAct(width, width, 3, eps=eps),
                                                     ConvBNAct(width, width, 3, eps=eps)) for _ in in_widths)
        self.reg_convs = nn.ModuleList(nn.Sequential(ConvBNAct(width, width, 3, eps=eps),
                                                     ConvBNAct(width, width, 3, eps=eps)) for _ in in_widths)
        self.cls_preds = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for _ in in_widths)
        self.reg_preds = nn.ModuleList(nn.Conv2d(width, 4, 1) for _ in in_widths)
        self.obj_preds = nn.ModuleList(nn.Conv2d(width, 1, 1) for _ in in_widths)
        prior_bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        for conv in [*self.cls_preds, *self.obj_preds]:
            nn.init.constant_(conv.bias, prior_bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Maps at strides 8/16/32 -> logits (B, A, 4 + 1 + K), anchors ordered level by level, row-major."""
        outputs = []
        for i, x in enumerate(features):
            x = self.stems[i](x)
            cls_feat = self.cls_convs[i](x)
            reg_feat = self.reg_convs[i](x)
            level = torch.cat([self.reg_preds[i](reg_feat), self.obj_preds[i](reg_feat), self.cls_preds[i](cls_feat)], 1)
            outputs.append(level.flatten(2))
        return torch.cat(outputs, dim=2).transpose(1, 2)


def anchor_points(sizes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid cell indices (A, 2) as (x, y) and the stride of each anchor (A,), in head output order."""
    grids, anchor_strides = [], []
    for (h, w), stride in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        grids.append(torch.stack([xs, ys], dim=-1).reshape(-1, 2))
        anchor_strides.append(torch.full((h * w,), stride, device=device))
    return torch.cat(grids).float(), torch.cat(anchor_strides).float()


def decode_boxes(reg: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Regression logits (..., A, 4) -> boxes (cx, cy, w, h) in input pixels (YOLOX parameterisation)."""
    xy = (reg[..., :2] + grid) * strides[:, None]
    wh = torch.exp(reg[..., 2:4].clamp(max=MAX_LOG_SIZE)) * strides[:, None]
    return torch.cat([xy, wh], dim=-1)
