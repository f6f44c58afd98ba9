"""The representations a model can read, and what each one's input looks like: channels per window and the
array type (one table for the input specification, the batched builder and every runtime; no Numba here,
so reading it stays cheap)."""

from __future__ import annotations

import numpy as np

KINDS = ("stacked_histogram", "voxel_grid", "time_surface", "event_frame")
COUNTING = ("stacked_histogram", "event_frame")  # saturating counts, stored as unsigned integers
# How a model reads each kind (stored with checkpoints and exports as InputSpec.event_encoding).
ENCODINGS = {
    "stacked_histogram": "stacked histogram counts saturated at `clip`, as float32 (no scaling)",
    "voxel_grid": "voxel grid: polarity (+1 / -1) split linearly between the two nearest of `bins` time bins, float32",
    "time_surface": "time surface: exp(-(window end - latest event) / (window / 2)) per polarity, float32 in [0, 1]",
    "event_frame": "event counts per polarity saturated at `clip`, as float32 (no scaling)",
}


def channels_per_window(kind: str, bins: int) -> int:
    """Channels of one window's `kind` representation with `bins` time bins (2 polarities where it keeps them)."""
    return {"stacked_histogram": 2 * bins, "voxel_grid": bins}.get(kind, 2)


def model_input_dtype(kind: str) -> np.dtype:
    """The array type of a model input of `kind`: uint8 counts (a clip of at most 255) or float32 values."""
    return np.dtype(np.uint8 if kind in COUNTING else np.float32)
