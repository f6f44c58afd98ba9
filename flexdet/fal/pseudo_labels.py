"""Teacher predictions -> pseudo-label candidates: confidence thresholds (global and per class), then the
union of the forward and time-reversed predictions with class-wise NMS at each instant.

Predictions are BOX_DTYPE rows (x, y, w, h top-left + size, score in `class_confidence`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flexdet.data.boxes import BOX_DTYPE, boxes_to_xyxy


def apply_thresholds(boxes: np.ndarray, threshold: float,
                     class_thresholds: Mapping[int, float] | None = None) -> np.ndarray:
    """The rows whose confidence is strictly above their class's threshold (`threshold` for the others),
    compared in float32 as the scores are stored (a score of 0.6 does not pass a threshold of 0.6)."""
    limits = np.full(len(boxes), threshold, dtype=np.float32)
    for class_id, limit in (class_thresholds or {}).items():
        limits[boxes["class_id"] == int(class_id)] = limit
    return boxes[boxes["class_confidence"].astype(np.float32) > limits]


def merge_directions(forward: np.ndarray, reverse: np.ndarray, nms_iou: float = 0.45) -> np.ndarray:
    """Union of two prediction sets with class-wise NMS (torchvision batched_nms) at each instant: a box
    seen from both directions keeps its more confident copy; boxes of other classes or instants never
    suppress each other. Sorted by time, then by decreasing confidence."""
    import torch
    from torchvision.ops import batched_nms

    merged = np.concatenate([forward.astype(BOX_DTYPE), reverse.astype(BOX_DTYPE)])
    if len(merged) == 0:
        return merged
    _, instant = np.unique(merged["t"], return_inverse=True)
    groups = torch.from_numpy(instant.astype(np.int64) * 256 + merged["class_id"].astype(np.int64))
    kept = batched_nms(torch.from_numpy(boxes_to_xyxy(merged)).double(),
                       torch.from_numpy(merged["class_confidence"].astype(np.float64)), groups, float(nms_iou))
    out = merged[kept.numpy()]
    return out[np.lexsort((-out["class_confidence"], out["t"]))]
