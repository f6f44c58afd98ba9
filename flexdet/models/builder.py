"""The public way to get a model: `build_model(preset, num_classes, use_frames, **overrides)`."""

from __future__ import annotations

from typing import Any

from flexdet.config import apply_overrides
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
