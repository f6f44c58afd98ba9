"""Stacked histogram (RVT's event representation) and event frame: saturating counts per polarity and bin."""

from __future__ import annotations

import numpy as np

from flexdet.data.representations._columns import (
    MAX_BINS,
    EventsLike,
    check_output_size,
    raise_if_invalid,
    whole_number,
)
from flexdet.data.representations._count_kernels import count_parallel, count_serial
from flexdet.data.representations._dispatch import Selection, check_span, deliver, select, thread_chunks
from flexdet.data.representations._segments import window_starts


def stacked_histogram(events: EventsLike, height: int, width: int, bins: int = 10, t_start: int | None = None,
                      t_end: int | None = None, clip: int = 10, *, as_tensor: bool = False,
                      parallel: bool | None = None):
    """Counts per (polarity, time bin, pixel) as uint8 (2 * bins, H, W), channel = p * bins + bin, saturating
    at `clip` (never wrapping).

    With t_start/t_end: the events with t in [t_start, t_end) go to bin floor((t - t_start) * bins /
    (t_end - t_start)); the rest are ignored. Without them, RVT's rule: t0 = first event, t1 = last event,
    bin = min(floor((t - t0) * bins / max(t1 - t0, 1)), bins - 1), so the last event lands in the last
    bin. Both are computed exactly in integers (RVT computes the same ratio in float32, which can drop an
    event lying exactly on a bin edge into the bin below). Events must be time-sorted.

    >>> stacked_histogram(events, 480, 640, bins=10, t_start=0, t_end=50_000).shape
    (20, 480, 640)
    """
    bins, clip = _check_bins_clip(bins, clip, 255)
    check_output_size(2 * bins * height * width, 1, "the stacked histogram")
    chosen = select(events, height, width, t_start, t_end, validate=False)
    check_span(chosen, bins, "the stacked histogram")
    out = count_events(chosen, height, width, bins, clip, np.uint8, parallel)
    return deliver(out.reshape(2 * bins, height, width), as_tensor)


def event_frame(events: EventsLike, height: int, width: int, t_start: int | None = None,
                t_end: int | None = None, clip: int = 65535, *, as_tensor: bool = False,
                parallel: bool | None = None):
    """Event counts per polarity as uint16 (2, H, W) (channel 0 = OFF, 1 = ON), saturating at `clip`; with
    t_start/t_end only the events in [t_start, t_end) count."""
    _, clip = _check_bins_clip(1, clip, 65535)
    check_output_size(2 * height * width, 2, "the event frame")
    chosen = select(events, height, width, t_start, t_end, validate=False)
    out = count_events(chosen, height, width, 1, clip, np.uint16, parallel)
    return deliver(out.reshape(2, height, width), as_tensor)


def count_events(chosen: Selection, height: int, width: int, bins: int, clip: int, dtype,
                 parallel: bool | None) -> np.ndarray:
    """The flat saturating count array of the chosen events, serial or parallel (identical results); the
    kernels check each event as they count it, and the first bad one raises FlexdetError."""
    t, x, y, p = chosen.columns
    plane = height * width
    starts, _, _ = window_starts(t, chosen.lo, chosen.hi, _or_zero(chosen.t_start), _or_zero(chosen.t_end),
                                 chosen.use_events_span, bins, bins)
    out = np.zeros(2 * bins * plane, dtype)
    chunks = thread_chunks(parallel, chosen.hi - chosen.lo)
    if chunks > 1:
        private = np.zeros((chunks, 2 * plane), dtype)
        bad = count_parallel(t, x, y, p, starts, out, private, width, height, clip)
    else:
        bad = count_serial(t, x, y, p, starts, out, width, height, clip)
    raise_if_invalid(chosen.columns, int(bad), chosen.lo, width, height, chosen.source)
    return out


def _or_zero(value: int | None) -> int:
    return 0 if value is None else value


def _check_bins_clip(bins: int, clip: int, dtype_max: int) -> tuple[int, int]:
    return whole_number("bins", bins, 1, MAX_BINS), whole_number("clip", clip, 1, dtype_max)
