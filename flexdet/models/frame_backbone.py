"""Frame branch: torchvision ResNet (no download) + torchvision FPN, giving maps at the fused strides."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d

from flexdet.errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LAYER_OF_STRIDE = {4: "layer1", 8: "layer2", 16: "layer3", 32: "layer4"}
# detectron2's FREEZE_AT: 1 freezes the stem, k > 1 the stem and residual stages res2 .. res{k}.
_FROZEN_PREFIXES = ("conv1.", "layer1.", "layer2.", "layer3.", "layer4.")


def load_resnet_weights(resnet: nn.Module, path: str) -> None:
    """Load a torchvision ResNet state dict from a local file (weights_only); the classifier may be absent."""
    from flexdet.models.checkpoint import read_torch_file

    file = Path(path)
    state = read_torch_file(file, "frame backbone weights file")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a ResNet state dict, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise CheckpointError(f"{file}: does not match the ResNet (missing {missing[:5]}, unexpected {unexpected[:5]})")


class FrameBackbone(nn.Module):
    """RGB in [0, 1] (B, 3, H, W) -> FPN maps of `fpn_width` channels at the requested strides.

    ImageNet normalisation happens here so the exported graph and the runtime cannot disagree about it.
    `norm` "frozen" uses FrozenBatchNorm2d (detectron2's FrozenBN: statistics and affine never train) and
    `freeze_at` stops gradients into the first layers as detectron2's FREEZE_AT does.
    """

    def __init__(self, name: str, fpn_width: int, strides: tuple[int, ...], weights: str | None = None,
                 norm: str = "batch", freeze_at: int = 0) -> None:
        super().__init__()
        norm_layer = FrozenBatchNorm2d if norm == "frozen" else None
        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)
        if weights is not None:
            load_resnet_weights(resnet, weights)
        frozen = _FROZEN_PREFIXES[:freeze_at]
        for key, parameter in resnet.named_parameters():
            if key.startswith(frozen) or (frozen and key.startswith("bn1.")):
                parameter.requires_grad_(False)
        return_layers = {_LAYER_OF_STRIDE[s]: str(s) for s in strides}
        self.body = IntermediateLayerGetter(resnet, return_layers=return_layers)
        expansion = 4 if name == "resnet50" else 1
        in_channels = [64 * expansion * s // 4 for s in strides]
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_width)
        self.strides = strides
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor, padded_size: tuple[int, int]) -> list[torch.Tensor]:
        """Normalise, zero-pad bottom/right to `padded_size`, return one map per stride (ascending)."""
        x = (frames - self.mean) / self.std
        x = nn.functional.pad(x, (0, padded_size[1] - x.shape[-1], 0, padded_size[0] - x.shape[-2]))
        maps = self.fpn(OrderedDict(self.body(x)))
        return [maps[str(s)] for s in self.strides]
