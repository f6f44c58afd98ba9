"""How good FAL's pseudo labels are, measured against the exact dense ground truth of synthetic data: at every
in-between instant, pseudo boxes are matched to the true boxes of the same class (greedy by teacher score, IoU
>= 0.5); precision, recall and the mean IoU of the matches tell whether a student learns from truth or noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from flexdet.data.boxes import boxes_to_xyxy
from flexdet.data.labels import read_boxes
from flexdet.errors import ConfigError
from flexdet.fal.generate import base_times, fine_grid, pseudo_label_path, split_pseudo_labels

MATCH_IOU = 0.5


def match_boxes(pseudo: np.ndarray, truth: np.ndarray, iou: float = MATCH_IOU) -> np.ndarray:
    """IoU of each matched pair, pseudo boxes taken by descending class_confidence, each true box once, same
    class only (BOX_DTYPE rows of one instant)."""
    if not len(pseudo) or not len(truth):
        return np.zeros(0)
    ious = box_iou(torch.from_numpy(boxes_to_xyxy(pseudo)).double(), torch.from_numpy(boxes_to_xyxy(truth)).double())
    ious = ious.numpy() * (pseudo["class_id"][:, None] == truth["class_id"][None, :])
    taken = np.zeros(len(truth), bool)
    matched = []
    for i in np.argsort(-pseudo["class_confidence"], kind="stable"):
        candidates = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou:
            taken[j] = True
            matched.append(candidates[j])
    return np.asarray(matched)


def pseudo_label_quality(root: str | Path, split: str = "train", factor: int = 2) -> dict:
    """Precision, recall and mean matched IoU of the pseudo labels written for `split` under `root` (on the
    `factor` x grid of the labels) against the dense ground truth at the same instants, with the counts."""
    from flexdet.datasets.sequences import open_dataset

    dataset = open_dataset(root, split)
    pseudo_count = truth_count = 0
    matched: list[np.ndarray] = []
    instants = 0
    try:
        for sequence in dataset.sequences:
            if sequence.dense is None:
                raise ConfigError(f"{sequence.path}: no dense ground truth; pseudo-label quality needs synthetic data")
            path = pseudo_label_path(sequence)
            if not path.is_file():
                raise ConfigError(f"{path}: no pseudo labels; run `flexdet pseudo-label` first")
            _, pseudo = split_pseudo_labels(read_boxes(path), sequence.labels)
            for t in _instants(sequence, pseudo, factor):
                rows = pseudo[pseudo["t"] == t]
                truth = sequence.ground_truth(int(t))
                pseudo_count += len(rows)
                truth_count += len(truth)
                matched.append(match_boxes(rows, truth))
                instants += 1
    finally:
        dataset.close()
    hits = np.concatenate(matched) if matched else np.zeros(0)
    return {"instants": instants, "pseudo_boxes": pseudo_count, "true_boxes": truth_count, "matched": len(hits),
            "precision": len(hits) / pseudo_count if pseudo_count else None,
            "recall": len(hits) / truth_count if truth_count else None,
            "mean_iou": float(hits.mean()) if len(hits) else None}


def _instants(sequence, pseudo: np.ndarray, factor: int) -> np.ndarray:
    """The in-between instants of the factor grid (those with no pseudo box count: all their truth is missed)."""
    base = base_times(sequence)
    grid = fine_grid(base, factor)
    between = grid[~np.isin(grid, base)]
    extra = np.setdiff1d(np.unique(pseudo["t"]), between)
    return np.union1d(between, extra)
