"""RVT's stacked histogram, exactly as RVT's preprocessing builds the inputs of its released models.

Differences to `stacked_histogram`: the window holds the events with t_end - window <= t <= t_end (both
ends inclusive: an event on a shared boundary counts in both windows); bins come from the first and last
EVENT times computed in float32, as torch does (an event on a bin edge can land one bin lower than exact
arithmetic puts it); counts accumulate in uint8 and wrap above 255 before the clip; with downscale 2
(RVT's 1 Mpx models) the full-resolution histogram is resampled with nearest-exact interpolation, i.e.
the odd rows and columns are kept.
"""

from __future__ import annotations

import numpy as np

from flexdet.data.representations._columns import EventsLike, event_columns, validate_columns, whole_number
from flexdet.errors import ConfigError


def rvt_stacked_histogram(events: EventsLike, height: int, width: int, t_end: int, window_us: int = 50_000,
                          bins: int = 10, clip: int = 10, downscale: int = 1) -> np.ndarray:
    """uint8 (2 * bins, H / downscale, W / downscale), channel = polarity * bins + bin, of the time-sorted
    events with t_end - window_us <= t <= t_end (height/width: the sensor's full resolution)."""
    bins = whole_number("bins", bins, 1, 255)
    clip = whole_number("clip", clip, 1, 255)
    if downscale not in (1, 2):
        raise ConfigError(f"downscale must be 1 or 2 (RVT halves 1 Mpx), got {downscale}")
    columns = event_columns(events)
    t = columns[0]
    lo = int(np.searchsorted(t, t_end - window_us, side="left"))
    hi = int(np.searchsorted(t, t_end, side="right"))
    validate_columns(columns, width, height, lo, hi)
    t, x, y, p = (c[lo:hi].astype(np.int64) for c in columns)
    counts = np.zeros(2 * bins * height * width, np.int64)
    if hi > lo:
        span = np.float32(max(int(t[-1] - t[0]), 1))
        ratio = (t - t[0]).astype(np.float32) / span * np.float32(bins)
        t_idx = np.minimum(np.floor(ratio), bins - 1).astype(np.int64)
        counts = np.bincount(x + width * y + height * width * (t_idx + bins * p), minlength=counts.size)
    hist = np.minimum(counts % 256, clip).astype(np.uint8).reshape(2 * bins, height, width)
    return np.ascontiguousarray(hist[:, 1::2, 1::2]) if downscale == 2 else hist
