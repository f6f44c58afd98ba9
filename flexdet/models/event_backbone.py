"""Recurrent event backbone (RVT-style): 4 stages at strides 4/8/16/32, each downsample + LayerNorm,
window/grid attention, optional frequency-adaptive filter, then a ConvLSTM or an S5 block (SSM). The
recurrent state is explicit: two tensors per stage, (h, c) of the ConvLSTM or (re, im) of the S5 state."""

from __future__ import annotations

import torch
from torch import nn

from flexdet.models.attention import WindowGridAttentionBlock
from flexdet.models.config import ModelConfig
from flexdet.models.convlstm import ConvLSTMCell
from flexdet.models.s5 import S5Block
from flexdet.models.spectral import AdaptiveFrequencyFilter

STRIDES = (4, 8, 16, 32)


class EventStage(nn.Module):
    """One stage: overlapping strided conv + channels-last LayerNorm, attention, spectral filter, recurrence."""

    def __init__(self, in_dim: int, dim: int, stride: int, kernel: int, attention: bool, spectral: bool,
                 config: ModelConfig) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, kernel, stride=stride, padding=kernel // 2,
                                    bias=config.downsample_bias)
        self.norm = nn.LayerNorm(dim)
        self.attention = WindowGridAttentionBlock(dim, config.head_dim, config.mlp_ratio, config.position_conv,
                                                  config.skip_first_norm) if attention else None
        self.spectral = AdaptiveFrequencyFilter(dim, config.spectral_groups, config.spectral_shrink,
                                                config.spectral_impl) if spectral else None
        self.recurrence = config.recurrence
        if config.recurrence == "s5":
            self.s5 = S5Block(dim, config.s5_dt_min, config.s5_dt_max, config.s5_discretization,
                              config.s5_bandlimit, config.s5_bandlimit_dynamic)
        else:
            self.lstm = ConvLSTMCell(dim)

    def forward(self, x: torch.Tensor, s0: torch.Tensor, s1: torch.Tensor, partition: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, C_in, H, W) -> (output, s0, s1), each (B, C, H/stride, W/stride); the new state (s0, s1) is
        the ConvLSTM's (h, c), whose h is also the output, or the S5 state (re, im)."""
        x = self.features(x, partition)
        if self.recurrence == "s5":
            return self.s5(x, s0, s1)
        h, c = self.lstm(x, s0, s1)
        return h, h, c

    def forward_sequence(self, x: torch.Tensor, s0: torch.Tensor, s1: torch.Tensor, partition: tuple[int, int]
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A clip x (T, B, C_in, H, W) -> (outputs (T, B, C, h, w), last s0, s1): the feedforward part runs
        on all T at once, then the S5 block scans the clip (the ConvLSTM steps through it)."""
        x = self.features(x.flatten(0, 1), partition).unflatten(0, x.shape[:2])
        if self.recurrence == "s5":
            return self.s5.scan(x, s0, s1)
        outputs = []
        for frame in x:
            s0, s1 = self.lstm(frame, s0, s1)
            outputs.append(s0)
        return torch.stack(outputs), s0, s1

    def features(self, x: torch.Tensor, partition: tuple[int, int]) -> torch.Tensor:
        """The stage without its recurrence: (B, C_in, H, W) -> (B, C, H/stride, W/stride)."""
        x = self.norm(self.downsample(x).permute(0, 2, 3, 1))
        if self.attention is not None:
            x = self.attention(x, partition)
        x = x.permute(0, 3, 1, 2)
        if self.spectral is not None:
            x = self.spectral(x)
        return x


class EventBackbone(nn.Module):
    """Four recurrent stages; state: two tensors per stage; output: the four stage maps (strides 4..32)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dims = [config.in_channels, *config.widths]
        self.stages = nn.ModuleList(
            EventStage(dims[i], dims[i + 1], 4 if i == 0 else 2, config.stem_kernel if i == 0 else 3,
                       config.attention_stages[i], config.spectral_stages[i], config)
            for i in range(4))
        self.partition_split = config.partition_split

    def forward(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x: (B, C, H, W) padded to a multiple of 32*partition_split; state: [h0, c0, ..., h3, c3]
        (S5: [re0, im0, ...])."""
        partition = self._partition(x.shape[-2], x.shape[-1])
        features, new_state = [], []
        for i, stage in enumerate(self.stages):
            x, s0, s1 = stage(x, state[2 * i], state[2 * i + 1], partition)
            features.append(x)
            new_state += [s0, s1]
        return features, new_state

    def forward_sequence(self, x: torch.Tensor, state: list[torch.Tensor]
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A clip x (T, B, C, H, W), stage by stage (S5 stages scan in parallel) -> (the four (T, B, C_i, h, w)
        feature maps, the state after the last step); equals T calls of `forward`."""
        partition = self._partition(x.shape[-2], x.shape[-1])
        features, new_state = [], []
        for i, stage in enumerate(self.stages):
            x, s0, s1 = stage.forward_sequence(x, state[2 * i], state[2 * i + 1], partition)
            features.append(x)
            new_state += [s0, s1]
        return features, new_state

    def _partition(self, height: int, width: int) -> tuple[int, int]:
        return height // 32 // self.partition_split, width // 32 // self.partition_split
