"""Reading weight files safely: one place for `torch.load(weights_only=True)` and for rebuilding a model from a
stored config + state dict, so every loader (frame backbone weights, training and deploy checkpoints) fails the
same way: a CheckpointError naming the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from flexdet.errors import CheckpointError, FlexdetError


def read_torch_file(path: os.PathLike[str] | str, what: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; a missing or unreadable file raises CheckpointError (`what` names it)."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"{file}: {what} not found")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch / pickle / zipfile raise many types for truncated or foreign files
        raise CheckpointError(f"{file}: not a readable {what} ({type(exc).__name__}: {exc})") from None


def model_from_state(source: os.PathLike[str] | str, config: dict, state: dict) -> torch.nn.Module:
    """A FlexDetector in eval mode built from a stored ModelConfig mapping and loaded with `state`."""
    from flexdet.config import from_dict
    from flexdet.models import ModelConfig, build_model

    try:
        model_config = from_dict(ModelConfig, {**config, "frame_weights": None}, source=f"{source}:model_config")
        model = build_model(model_config, model_config.num_classes, model_config.use_frames)
    except FlexdetError as exc:
        raise CheckpointError(f"{source}: invalid model config ({exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not match the stored model config "
                              f"({str(exc).splitlines()[0]})") from None
    return model.eval()
