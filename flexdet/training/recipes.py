"""FAL training recipes: the teacher (trained on the last half of every label interval) and the student
(fine-tuned from the teacher on ground truth + confidence-weighted pseudo labels), as overlays on any recipe,
and the per-step label source that feeds the student its pseudo targets.

Teacher: a stream at `factor` x the label rate (40 Hz for 20 Hz labels) with the label file's instants only,
so each labelled window is exactly the last 1/factor of a label interval and the loss sees nothing else.
Student: the same stream, every instant labelled: GT at label instants, pseudo labels at the in-between ones
(`student_target` weights), clips aligned to the grid so each batch step is all-GT or all-pseudo and the two
kinds are normalised separately (the loss of a step is divided by that step's own positives).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from flexdet.config import from_dict, to_dict
from flexdet.datasets.ground_truth import labels_at
from flexdet.errors import ConfigError, FormatError
from flexdet.fal.config import StudentConfig, student_target
from flexdet.fal.generate import base_times, fine_grid, pseudo_label_path, split_pseudo_labels
from flexdet.training.config import RECIPE_DIR, TrainConfig

RECIPES = ("teacher", "student")


def apply_recipe(config: TrainConfig, recipe: str, init: str | None = None) -> TrainConfig:
    """`config` turned into the FAL teacher or student recipe: the overlay flexdet/configs/train/<recipe>.yaml
    merged in, the stream rate set to `fal.factor` x the base recipe's rate (which is the label rate: 20 Hz
    recipes become 40 Hz streams); the student also takes `fal.student.lr`
    and `.steps` as its optimiser settings and starts from `init` (or model.init)."""
    if recipe not in RECIPES:
        raise ConfigError(f"--recipe must be one of {RECIPES}, got {recipe!r}")
    overlay = yaml.safe_load((RECIPE_DIR / f"{recipe}.yaml").read_text()) or {}
    merged = _deep_merge(to_dict(config), overlay)
    merged["data"]["rates_hz"] = [min(config.data.rates_hz) * int(merged["fal"]["factor"])]
    if recipe == "student":
        merged["optim"]["lr"] = merged["fal"]["student"]["lr"]
        merged["optim"]["steps"] = merged["fal"]["student"]["steps"]
        merged["data"]["clip_align"] = int(merged["fal"]["factor"])
        merged["model"]["init"] = str(init) if init else merged["model"].get("init")
        if not merged["model"]["init"]:
            raise ConfigError("the student recipe starts from the teacher: give its checkpoint (--init or model.init)")
        if merged["data"]["clip_steps"] % merged["data"]["clip_align"]:
            merged["data"]["clip_steps"] += merged["data"]["clip_align"] - merged["data"]["clip_steps"] % \
                merged["data"]["clip_align"]
    return from_dict(TrainConfig, merged, source=f"{recipe} recipe")


def _deep_merge(base: dict, overlay: dict) -> dict:
    """`overlay` written over `base`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


class TrainingLabels:
    """The boxes a training step ending at `t` learns from (`at`), by `source`:
    "auto" the sequence's ground truth (dense when it has it), "sparse" the label file's instants only,
    "pseudo" the label file plus the pseudo labels of `pseudo_tracks.npy` at the in-between grid instants
    (an instant with no kept pseudo box is an all-background pseudo step)."""

    def __init__(self, source: str, factor: int = 2, student: StudentConfig | None = None) -> None:
        self.source = source
        self.factor = int(factor)
        self.student = student or StudentConfig()
        self._pseudo: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def at(self, sequence, t: int) -> tuple[np.ndarray | None, bool]:
        """(BOX_DTYPE rows in the label file's frame, is_pseudo); rows None when the step is unlabelled."""
        if self.source == "auto":
            return (sequence.ground_truth(t), False) if sequence.is_labelled(t) else (None, False)
        times = np.unique(sequence.labels["t"])
        if _contains(times, t):
            return labels_at(sequence.labels, t), False
        if self.source == "sparse":
            return None, False
        instants, pseudo = self._pseudo_of(sequence)[1:]
        if not _contains(instants, t):
            return None, False
        return pseudo[pseudo["t"] == t], True

    def pseudo_target(self, xyxy: np.ndarray, class_ids: np.ndarray, confidences: np.ndarray) -> dict:
        """compute_losses target of a pseudo step (input frame, evaluated class ids, teacher scores)."""
        import torch

        target = student_target(xyxy, class_ids.astype(np.int64), confidences, True, self.student)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
                for k, v in target.items()}

    def _pseudo_of(self, sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(label instants, in-between instants, pseudo rows) of a sequence, read once."""
        if sequence.name not in self._pseudo:
            from flexdet.data.labels import read_boxes

            path = pseudo_label_path(sequence)
            if not Path(path).is_file():
                raise ConfigError(f"{path}: no pseudo labels for sequence {sequence.name}; run `flexdet pseudo-label "
                                  "TEACHER --data DIR` first (or `flexdet fal`)")
            boxes = read_boxes(path)
            if len(boxes) and np.any(np.diff(boxes["t"].astype(np.int64)) < 0):
                raise FormatError(path, "rows are not sorted by time", index=int(np.argmax(np.diff(boxes["t"]) < 0)))
            base = base_times(sequence)
            grid = fine_grid(base, self.factor)
            between = grid[~np.isin(grid, base)]
            _, pseudo = split_pseudo_labels(boxes, sequence.labels)
            stray = ~np.isin(pseudo["t"], between)
            if np.any(stray):
                raise FormatError(path, f"pseudo row at t={int(pseudo['t'][stray][0])} µs is not on the "
                                        f"{self.factor}x grid of the labels (written with another --factor?)",
                                  index=int(np.flatnonzero(np.isin(boxes["t"], pseudo["t"][stray]))[0]))
            self._pseudo[sequence.name] = (base, between, pseudo)
        return self._pseudo[sequence.name]


def training_labels(config: TrainConfig) -> TrainingLabels | None:
    """The label source a recipe asks for (None: the loader's default, the data's own ground truth)."""
    if config.data.labels == "auto":
        return None
    return TrainingLabels(config.data.labels, config.fal.factor, config.fal.student)


def _contains(sorted_times: np.ndarray, t: int) -> bool:
    index = int(np.searchsorted(sorted_times, t))
    return index < len(sorted_times) and int(sorted_times[index]) == int(t)
