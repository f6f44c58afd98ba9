"""Where each time bin begins in a time-sorted event array, found by binary search on exact integer edges.

Events are sorted by time, so a bin is a contiguous index range: the kernels then loop bin by bin with a
constant channel offset and never divide per event. Edges are integer ceilings, so an event on an edge
lands exactly where floor((t - t0) * bins / span) puts it. The search is written here rather than using
np.searchsorted because numpy copies strided inputs (structured-array fields) on every call.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def search_left(t, lo, hi, value):
    """First index i in [lo, hi] with t[i] >= value (hi if none), for non-decreasing t."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if t[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True)
def segment_starts(t, lo, hi, t_base, span, segments, divisor):
    """Start index of each of `segments` bins in [lo, hi) plus `hi` at the end.

    Bin j holds the events with floor((t - t_base) * divisor / span) == j for j < segments - 1; the last
    bin also keeps everything later (RVT's clamp of the last event into the last bin).
    """
    starts = np.empty(segments + 1, np.int64)
    starts[0] = lo
    starts[segments] = hi
    for j in range(1, segments):
        edge = t_base - ((-j * span) // divisor)
        starts[j] = search_left(t, starts[j - 1], hi, edge)
    return starts


@numba.njit(cache=True, nogil=True)
def window_timing(t, lo, hi, t_start, t_end, use_events_span):
    """(t_base, span) of the bins: the window [t_start, t_end) or, with `use_events_span`, the first and last
    of the times t[lo:hi] (span at least 1 µs)."""
    if not use_events_span:
        return t_start, max(t_end - t_start, 1)
    if hi > lo:
        return t[lo], max(t[hi - 1] - t[lo], 1)
    return t_start, 1


@numba.njit(cache=True, nogil=True)
def window_starts(t, lo, hi, t_start, t_end, use_events_span, segments, divisor):
    """Bin starts for the events in index range [lo, hi), timed either by the window [t_start, t_end) or,
    with `use_events_span`, by the first and last event (span at least 1 µs); returns (starts, t_base, span)."""
    t_base, span = window_timing(t, lo, hi, t_start, t_end, use_events_span)
    return segment_starts(t, lo, hi, t_base, span, segments, divisor), t_base, span


@numba.njit(cache=True, nogil=True)
def chunk_bounds(starts, chunk, chunks):
    """Event index range of chunk `chunk` of `chunks` equal parts of [starts[0], starts[-1])."""
    lo = starts[0]
    n = starts[len(starts) - 1] - lo
    return lo + n * chunk // chunks, lo + n * (chunk + 1) // chunks


@numba.njit(cache=True, nogil=True)
def segment_of(starts, index):
    """The bin j with starts[j] <= index < starts[j + 1]."""
    j = 0
    while j + 2 < len(starts) and starts[j + 1] <= index:
        j += 1
    return j


@numba.njit(cache=True, nogil=True)
def first_bad(found):
    """The first (lowest) non-negative event index among the chunks' findings, or -1 if there is none."""
    for k in range(len(found)):
        if found[k] >= 0:
            return found[k]
    return -1
