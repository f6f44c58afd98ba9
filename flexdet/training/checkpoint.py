"""Training checkpoints: model, optimiser, scheduler, RNG states, sampler position and step, written atomically
and read back with `torch.load(weights_only=True)` (the config is stored as plain data, not pickled objects)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexdet.atomic import atomic_path
from flexdet.errors import CheckpointError

FORMAT = "flexdet-train-checkpoint-1"


def rng_states() -> dict[str, Any]:
    """Python, numpy and torch RNG states as weights_only-loadable data."""
    kind, keys, pos, gauss_has, gauss = np.random.get_state(legacy=True)
    state = {"python": _python_state(), "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                                                  "has_gauss": int(gauss_has), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore what `rng_states` saved."""
    version, internal, gauss = state["python"]["version"], state["python"]["internal"], state["python"]["gauss"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def save_checkpoint(path: os.PathLike[str] | str, payload: dict[str, Any]) -> Path:
    """Write `payload` (+ format tag) atomically: a crash leaves the previous checkpoint intact."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return path


def load_checkpoint(path: os.PathLike[str] | str, map_location: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; CheckpointError names the file and the problem."""
    from flexdet.models.checkpoint_io import read_torch_file

    path = Path(path)
    payload = read_torch_file(path, "flexdet checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a flexdet training checkpoint (format tag missing)")
    for key in ("model", "config", "step"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return payload


def load_detector(path: os.PathLike[str] | str, map_location: str = "cpu"):
    """(model in eval mode, TrainConfig, model config dict, dataset info dict) from a training checkpoint."""
    from flexdet.config import from_dict
    from flexdet.models.checkpoint_io import model_from_state
    from flexdet.training.config import TrainConfig

    payload = load_checkpoint(path, map_location)
    if "model_config" not in payload:
        raise CheckpointError(f"{path}: checkpoint lacks 'model_config'")
    train_config = from_dict(TrainConfig, payload["config"], source=f"{path}:config")
    model = model_from_state(path, payload["model_config"], payload["model"])
    return model, train_config, model.config, payload.get("dataset", {})
