"""Bounding-box labels in one normalised dtype, whatever file they came from.

Gen1 (`ts`, `confidence`), 1Mpx and DSEC-Det (`t`, `class_confidence`) label files are all read into
BOX_DTYPE: one row per box, top-left corner + size in pixels, sorted by time; all boxes of one labelled
instant share `t`.
"""

from __future__ import annotations

import numpy as np

BOX_DTYPE = np.dtype([
    ("t", "<i8"),
    ("x", "<f4"),
    ("y", "<f4"),
    ("w", "<f4"),
    ("h", "<f4"),
    ("class_id", "u1"),
    ("class_confidence", "<f4"),
    ("track_id", "<u4"),
])

# What DSEC-Det's tracks.npy and Prophesee's *_bbox.npy store; writers use it so files read back anywhere.
FILE_BOX_DTYPE = np.dtype([
    ("t", "<u8"),
    ("x", "<f4"),
    ("y", "<f4"),
    ("w", "<f4"),
    ("h", "<f4"),
    ("class_id", "u1"),
    ("class_confidence", "<f4"),
    ("track_id", "<u4"),
])


def empty_boxes(n: int = 0) -> np.ndarray:
    """A BOX_DTYPE array of length `n` (zeros)."""
    return np.zeros(n, dtype=BOX_DTYPE)


def clip_boxes(boxes: np.ndarray, width: int, height: int, min_size: float = 0.0) -> np.ndarray:
    """Clip boxes to the sensor [0, width) x [0, height); drop boxes left with w or h <= min_size."""
    out = boxes.copy()
    x0 = np.clip(boxes["x"], 0, width)
    y0 = np.clip(boxes["y"], 0, height)
    x1 = np.clip(boxes["x"] + boxes["w"], 0, width)
    y1 = np.clip(boxes["y"] + boxes["h"], 0, height)
    out["x"], out["y"], out["w"], out["h"] = x0, y0, x1 - x0, y1 - y0
    keep = (out["w"] > min_size) & (out["h"] > min_size)
    return out[keep]


def boxes_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) float32 array of x0, y0, x1, y1 (torchvision convention) from BOX_DTYPE rows."""
    return np.stack([boxes["x"], boxes["y"], boxes["x"] + boxes["w"], boxes["y"] + boxes["h"]],
                    axis=1).astype(np.float32)
