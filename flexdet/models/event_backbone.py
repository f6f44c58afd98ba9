"""Recurrent event backbone (RVT-style): 4 stages at strides 4/8/16/32, each downsample + LayerNorm,
window/grid attention, optional frequency-adaptive filter, ConvLSTM. The recurrent state is explicit."""

from __future__ import annotations

import torch
from torch import nn

from flexdet.models.attention import WindowGridAttentionBlock
from flexdet.models.config import ModelConfig
from flexdet.models.convlstm import ConvLSTMCell
from flexdet.models.spectral import AdaptiveFrequencyFilter

STRIDES = (4, 8, 16, 32)


class EventStage(nn.Module):
    """One stage: overlapping strided conv + channels-last LayerNorm, attention, spectral filter, ConvLSTM."""

    def __init__(self, in_dim: int, dim: int, stride: int, kernel: int, attention: bool, spectral: bool,
                 config: ModelConfig) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)
        self.attention = WindowGridAttentionBlock(dim, config.head_dim, config.mlp_ratio) if attention else None
        self.spectral = AdaptiveFrequencyFilter(dim, config.spectral_groups, config.spectral_shrink,
                                                config.spectral_impl) if spectral else None
        self.lstm = ConvLSTMCell(dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                partition: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C_in, H, W) -> (h_new, c_new), each (B, C, H/stride, W/stride); h_new is the stage output."""
        x = self.norm(self.downsample(x).permute(0, 2, 3, 1))
        if self.attention is not None:
            x = self.attention(x, partition)
        x = x.permute(0, 3, 1, 2)
        if self.spectral is not None:
            x = self.spectral(x)
        return self.lstm(x, h, c)


class EventBackbone(nn.Module):
    """Four recurrent stages; state is a list of (h, c) per stage, output the four h maps (strides 4..32)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dims = [config.in_channels, *config.widths]
        self.stages = nn.ModuleList(
            EventStage(dims[i], dims[i + 1], 4 if i == 0 else 2, config.stem_kernel if i == 0 else 3,
                       config.attention_stages[i], config.spectral_stages[i], config)
            for i in range(4))
        self.partition_split = config.partition_split

    def forward(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x: (B, C, H, W) padded to a multiple of 32*partition_split; state: [h0, c0, ..., h3, c3]."""
        height, width = x.shape[-2:]
        partition = (height // 32 // self.partition_split, width // 32 // self.partition_split)
        features, new_state = [], []
        for i, stage in enumerate(self.stages):
            h, c = stage(x, state[2 * i], state[2 * i + 1], partition)
            features.append(h)
            new_state += [h, c]
            x = h
        return features, new_state
