"""Time reversal of the teacher's input: of a stacked histogram (flip the bins, swap the polarities) and of
an event array (t -> t0 + t1 - 1 - t, p -> 1 - p), so the teacher can also run backwards in time.

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
