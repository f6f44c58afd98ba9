"""Model checkpoints: `model.pt` = {format, model config as plain data, state_dict, deploy metadata}.

Loaded with torch.load(weights_only=True), so a checkpoint can carry no code. Training checkpoints that
store the model under `model` / `model_state` and the config under `config` / `model_config` load too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from flexdet.atomic import atomic_path
from flexdet.config import from_dict, to_dict
from flexdet.errors import CheckpointError
from flexdet.export.metadata import DeployMetadata

FORMAT = "flexdet.checkpoint"
VERSION = 1
_STATE_KEYS = ("state_dict", "model", "model_state")
_CONFIG_KEYS = ("model_config", "config")


def save_checkpoint(path: os.PathLike[str] | str, model: torch.nn.Module,
                    metadata: DeployMetadata | None = None) -> Path:
    """Write `model`'s config and weights (and deploy metadata) atomically; returns the path."""
    payload = {"format": FORMAT, "version": VERSION, "model_config": to_dict(model.config),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "deploy": to_dict(metadata) if metadata is not None else None}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: os.PathLike[str] | str, map_location: str | torch.device = "cpu"
                    ) -> tuple[torch.nn.Module, DeployMetadata | None]:
    """(FlexDetector in eval mode, its DeployMetadata or None) from a checkpoint file."""
    from flexdet.models.checkpoint_io import model_from_state, read_torch_file

    file = Path(path)
    payload = read_torch_file(file, "torch checkpoint", map_location)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{file}: expected a dict checkpoint, got {type(payload).__name__}")
    state = _first(payload, _STATE_KEYS)
    config = _first(payload, _CONFIG_KEYS)
    if isinstance(config, dict) and isinstance(config.get("model"), dict):
        config = config["model"]
    if not isinstance(state, dict) or not isinstance(config, dict):
        raise CheckpointError(f"{file}: no model config and state_dict in the checkpoint (keys: {sorted(payload)})")
    model = model_from_state(file, config, state)
    deploy = payload.get("deploy")
    if isinstance(deploy, dict):
        return model, from_dict(DeployMetadata, deploy, source=f"{file}:deploy")
    return model, _training_metadata(model, payload)


def _training_metadata(model: torch.nn.Module, payload: dict) -> DeployMetadata | None:
    """Deploy metadata from a training checkpoint's dataset info (classes, input size) and data config
    (window = 1 / first training rate); None when those are absent."""
    from flexdet.export.metadata import metadata_for_model

    dataset, data = payload.get("dataset"), (payload.get("config") or {}).get("data", {})
    if not isinstance(dataset, dict) or len(dataset.get("input_size") or []) != 2:
        return None
    width, height = (int(v) for v in dataset["input_size"])
    rates = data.get("rates_hz") or [20.0]
    return metadata_for_model(model, height, width, classes=dataset.get("classes"),
                              window_us=int(round(1e6 / float(rates[0]))))


def _first(payload: dict, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in payload:
            return payload[key]
    return None
