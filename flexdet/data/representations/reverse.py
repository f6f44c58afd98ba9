"""Time reversal of the teacher's input: of a stacked histogram (flip the bins, swap the polarities), of the
other representations a model reads, and of an event array (t -> t0 + t1 - 1 - t, p -> 1 - p), so the teacher
can also run backwards in time.

With channel = p * bins + bin, the channel of (1 - p, bins - 1 - bin) is 2 * bins - 1 - channel: the
reversal is a flip of the whole channel axis. The two reversals agree exactly when the window length is a
multiple of `bins` (25 ms, 50 ms with 10 bins); otherwise an event within 1 µs of a fractional bin edge
can land one bin over, because integer µs times cannot mirror a fractional edge.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from flexdet.errors import FlexdetError

Array = TypeVar("Array")


def reverse_histogram(histogram: Array, bins: int = 10) -> Array:
    """The stacked histogram of the same window played backwards: (..., 2 * bins, H, W), numpy or torch."""
    channels = histogram.shape[-3]
    if channels != 2 * bins:
        raise FlexdetError(f"reverse_histogram: expected 2 * bins = {2 * bins} channels, got {channels}")
    if isinstance(histogram, np.ndarray):
        return np.ascontiguousarray(np.flip(histogram, axis=-3))
    return histogram.flip(-3)


def reverse_window(window: np.ndarray, kind: str, bins: int) -> np.ndarray:
    """The `kind` representation (..., C, H, W) of the same window played backwards (t -> t0 + t1 - t, polarity
    swapped): counting kinds swap polarities (and flip the bins), a voxel grid flips its bins and negates them
    (each event's +-1 changes sign, its fraction of the window mirrors). A time surface keeps only each pixel's
    latest event, so its reversal (the earliest) cannot be computed from it: refused."""
    if kind == "stacked_histogram":
        return reverse_histogram(window, bins)
    if kind == "event_frame":
        return reverse_histogram(window, 1)
    if kind == "voxel_grid":
        return np.ascontiguousarray(-np.flip(window, axis=-3))
    raise FlexdetError(f"a {kind} cannot be played backwards (it keeps only each pixel's latest event); "
                       f"time-reversed reads need a stacked_histogram, voxel_grid or event_frame input")


def reverse_events(events: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """EVENT_DTYPE events of [t0, t1) played backwards inside the same window, still sorted by time."""
    t0, t1 = int(t0), int(t1)
    if len(events) and (int(events["t"].min()) < t0 or int(events["t"].max()) >= t1):
        raise FlexdetError(f"reverse_events: events span [{int(events['t'].min())}, {int(events['t'].max())}] "
                           f"µs, outside the window [{t0}, {t1})")
    if len(events) and int(events["p"].max()) > 1:
        raise FlexdetError(f"reverse_events: polarity {int(events['p'].max())} is not 0 or 1 "
                           f"(event index {int(np.argmax(events['p'] > 1))})")
    out = events[::-1].copy()
    out["t"] = (t0 + t1 - 1) - out["t"]
    out["p"] = 1 - out["p"]
    return out
