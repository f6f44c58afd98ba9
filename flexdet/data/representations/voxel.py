"""Voxel grid: each event's polarity (+1 / -1) split linearly between its two nearest time bins."""

from __future__ import annotations

import numpy as np

from flexdet.data.representations._columns import (
    MAX_BINS,
    EventsLike,
    check_output_size,
    raise_if_invalid,
    whole_number,
)
from flexdet.data.representations._dispatch import Selection, check_span, deliver, select, thread_chunks
from flexdet.data.representations._segments import window_starts
from flexdet.data.representations._voxel_kernels import voxel_finish, voxel_parallel, voxel_serial


def voxel_grid(events: EventsLike, height: int, width: int, bins: int = 5, t_start: int | None = None,
               t_end: int | None = None, *, as_tensor: bool = False, parallel: bool | None = None):
    """float32 (bins, H, W): an event at tn = (t - t_start) / (t_end - t_start) * (bins - 1) adds
    p * (1 - (tn - floor(tn))) to bin floor(tn) and p * (tn - floor(tn)) to the next, p = +1 ON / -1 OFF.

    With t_start/t_end only events in [t_start, t_end) count; without them the first and last event
    bound the span (at least 1 µs). Sums are exact (integer accumulation), rounded once to float32.
    """
    bins = whole_number("bins", bins, 1, MAX_BINS)
    check_output_size(bins * height * width, 12, "the voxel grid and its accumulator")
    chosen = select(events, height, width, t_start, t_end, validate=False)
    check_span(chosen, max(bins, chosen.hi - chosen.lo + 1), "exact voxel accumulation")
    acc, span = accumulate_voxels(chosen, height, width, bins, parallel)
    out = np.empty(bins * height * width, np.float32)
    voxel_finish(acc, span, out)
    return deliver(out.reshape(bins, height, width), as_tensor)


def accumulate_voxels(chosen: Selection, height: int, width: int, bins: int,
                      parallel: bool | None) -> tuple[np.ndarray, int]:
    """The flat int64 accumulator (value * span) of the chosen events and the span it is scaled by; the
    kernels check each event as they add it, and the first bad one raises FlexdetError."""
    t, x, y, p = chosen.columns
    plane = height * width
    starts, t_base, span = window_starts(t, chosen.lo, chosen.hi, chosen.t_start or 0, chosen.t_end or 0,
                                         chosen.use_events_span, bins, max(bins - 1, 1))
    acc = np.zeros(bins * plane, np.int64)
    chunks = thread_chunks(parallel, chosen.hi - chosen.lo)
    if chunks > 1:
        private = np.zeros((chunks, 2 * plane), np.int64)
        bad = voxel_parallel(t, x, y, p, starts, t_base, span, acc, private, width, height)
    else:
        bad = voxel_serial(t, x, y, p, starts, t_base, span, acc, width, height)
    raise_if_invalid(chosen.columns, int(bad), chosen.lo, width, height, chosen.source)
    return acc, int(span)
