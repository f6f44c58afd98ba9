"""Writing training checkpoints: model, input specification, optimiser, scheduler, RNG states, sampler position
and step, atomically, as plain data (no pickled objects); `flexdet.models.checkpoint` reads them back."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexdet.atomic import atomic_path
from flexdet.models.checkpoint import TRAIN_FORMAT


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
        torch.save({"format": TRAIN_FORMAT, **payload}, tmp)
    return path
