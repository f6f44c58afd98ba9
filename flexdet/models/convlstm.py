"""Single-step ConvLSTM cell: the recurrent memory of each event-backbone stage (state passed explicitly)."""

from __future__ import annotations

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: a 1x1 conv on [x, h_prev] gives the 4C gate pre-activations (RVT's cell)."""

    def __init__(self, dim: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.gates = nn.Conv2d(2 * dim, 4 * dim, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x, h, c: (B, C, H, W) -> (h_new, c_new)."""
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return h_new, c_new
