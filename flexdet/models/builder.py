"""The public way to get a model: `build_model(preset, num_classes, use_frames, **overrides)`."""

from __future__ import annotations

from typing import Any

import torch

from flexdet.config import apply_overrides
from flexdet.data.input_spec import InputSpec, identity_spec
from flexdet.models.config import ModelConfig, load_model_config
from flexdet.models.detector import FlexDetector


def build_model(preset: str | ModelConfig, num_classes: int, use_frames: bool = True,
                **overrides: Any) -> FlexDetector:
    """Build a FlexDetector from a preset name (nano/tiny/small/base), a YAML path, or a ModelConfig.

    Keyword overrides set any ModelConfig field (e.g. spectral_impl="matmul", dual_windows=True).
    """
    overrides = {"num_classes": num_classes, "use_frames": use_frames, **overrides}
    if isinstance(preset, ModelConfig):
        return FlexDetector(apply_overrides(preset, overrides))
    return FlexDetector(load_model_config(preset, **overrides))


def random_preset(preset: str, num_classes: int = 2, use_frames: bool = False, seed: int = 0, height: int = 240,
                  width: int = 304, window_us: int = 50_000) -> tuple[FlexDetector, InputSpec]:
    """A preset with random weights drawn from `seed` (eval mode) and the input specification of a `width` x
    `height` sensor fed whole: what `flexdet export --preset` writes and a preset name runs (timing, not detection)."""
    torch.manual_seed(seed)
    model = build_model(preset, num_classes=num_classes, use_frames=use_frames).eval()
    spec = identity_spec(height, width, bins=model.config.bins, window_us=window_us,
                         dual_windows=model.config.dual_windows)
    return model, spec
