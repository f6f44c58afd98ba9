"""MaxViT-style attention block of the event backbone: local window attention, then dilated grid attention.

Works on channels-last maps (B, H, W, C). Window and grid sizes are given per call so one set of weights
runs at any input size; H and W must be multiples of them (the detector pads the input so they are).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def window_partition(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, wh * ww, C): contiguous wh x ww windows."""
    b, h, w, c = x.shape
    wh, ww = size
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(x: torch.Tensor, size: tuple[int, int], shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Inverse of window_partition."""
    b, h, w, c = shape
    wh, ww = size
    x = x.reshape(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def grid_partition(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * cells, gh * gw, C): each group is a gh x gw grid dilated over the whole map."""
    b, h, w, c = x.shape
    gh, gw = size
    x = x.reshape(b, gh, h // gh, gw, w // gw, c).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, gh * gw, c)


def grid_reverse(x: torch.Tensor, size: tuple[int, int], shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Inverse of grid_partition."""
    b, h, w, c = shape
    gh, gw = size
    x = x.reshape(b, h // gh, w // gw, gh, gw, c).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, h, w, c)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention over token groups (N, L, C) with heads of `head_dim` channels (fewer if C is small)."""

    def __init__(self, dim: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, dim // head_dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, length, c))


class MLP(nn.Module):
    """Two-layer GELU MLP with hidden width ratio * dim."""

    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class PartitionAttention(nn.Module):
    """Pre-norm transformer layer (attention + MLP) applied within windows or within dilated grids."""

    def __init__(self, dim: int, head_dim: int, mlp_ratio: int, mode: str, first_norm: bool = True) -> None:
        super().__init__()
        self.partition, self.reverse = (window_partition, window_reverse) if mode == "window" else (
            grid_partition, grid_reverse)
        self.norm1 = nn.LayerNorm(dim) if first_norm else nn.Identity()
        self.attn = MultiHeadSelfAttention(dim, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        shape = tuple(x.shape)
        attended = self.reverse(self.attn(self.partition(self.norm1(x), size)), size, shape)
        x = x + attended
        return x + self.mlp(self.norm2(x))


class WindowGridAttentionBlock(nn.Module):
    """Local window attention then dilated grid attention, preceded by a depthwise-conv position encoding.

    The 3x3 depthwise position encoding replaces MaxViT's relative-position table, whose size would tie
    the weights to one input resolution; it is size-agnostic and exports as a plain convolution. RVT has
    neither (position_conv=False) and no first LayerNorm in the window layer (skip_first_norm=True).
    """

    def __init__(self, dim: int, head_dim: int = 32, mlp_ratio: int = 4, position_conv: bool = True,
                 skip_first_norm: bool = False) -> None:
        super().__init__()
        self.position = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if position_conv else None
        self.window = PartitionAttention(dim, head_dim, mlp_ratio, "window", first_norm=not skip_first_norm)
        self.grid = PartitionAttention(dim, head_dim, mlp_ratio, "grid")

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x: (B, H, W, C) channels-last; size: (h, w) of both the windows and the grid."""
        if self.position is not None:
            x = x + self.position(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.grid(self.window(x, size), size)
