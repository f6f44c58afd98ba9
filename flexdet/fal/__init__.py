"""Frequency-adjusted labels (FAL / FlexTune): a teacher labels the instants between the labelled frames.

Pipeline: stream the teacher forward and time-reversed on a grid `factor` times finer than the labels
(`generate`), keep confident predictions and merge both directions with class-wise NMS
(`pseudo_labels`), keep only pseudo boxes a GT-aware constant-velocity tracker vouches for (`tracker`),
and write them next to the data as `pseudo_tracks.npy`. `config` holds every threshold and the student's
loss weights. `flextune` rebuilds FlexEvent's own label stream (its thresholds, NMS and LEOD's tracker) row
for row from given teacher predictions; `fal.rule: flextune` (`flexdet pseudo-label --rule flextune`) makes
`pseudo_label_sequence` write it. Names load lazily so importing the package does not import torch.
"""

from __future__ import annotations

from flexdet.lazy import lazy_exports

_EXPORTS = {
    "FALConfig": "flexdet.fal.config",
    "TrackerConfig": "flexdet.fal.config",
    "StudentConfig": "flexdet.fal.config",
    "student_target": "flexdet.fal.config",
    "apply_thresholds": "flexdet.fal.pseudo_labels",
    "merge_directions": "flexdet.fal.pseudo_labels",
    "BoxTracker": "flexdet.fal.tracker",
    "track_filter": "flexdet.fal.tracker",
    "fine_grid": "flexdet.data.clock",
    "teacher_predictions": "flexdet.fal.generate",
    "pseudo_label_sequence": "flexdet.fal.generate",
    "pseudo_label_dataset": "flexdet.fal.generate",
    "pseudo_label_path": "flexdet.fal.generate",
    "split_pseudo_labels": "flexdet.fal.generate",
    "PSEUDO_LABELS_NAME": "flexdet.fal.generate",
    "flextune_labels": "flexdet.fal.flextune",
    "flextune_grid": "flexdet.fal.flextune",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
