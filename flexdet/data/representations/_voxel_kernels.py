"""Numba kernels for the voxel grid, accumulated exactly in integers.

An event in bin j (floor of tn = (t - t0) * (bins - 1) / span) has tn - j = num / span with an integer
num in [0, span): it adds sign * (span - num) to plane j and sign * num to plane j + 1 of an int64
accumulator, and the grid is accumulator / span at the end. Integer sums do not depend on the order of
addition, so the parallel kernel (contiguous event chunks; a chunk's planes shared with the previous
chunk go to a private two-plane buffer) equals the serial one bit for bit, and both are the correctly
rounded value of the exact sum rather than of a float32 running sum. Events are validated as they are
added (see _count_kernels), so no separate pass reads them first. Two int64 planes outgrow the L2 cache
from 640x480 on, so each event's two cells are prefetched PREFETCH_DISTANCE events ahead (_prefetch).
"""

from __future__ import annotations

import numba
import numpy as np

from flexdet.data.representations._event_checks import read_checked, time_before
from flexdet.data.representations._prefetch import PREFETCH_DISTANCE, prefetch_for_write
from flexdet.data.representations._segments import chunk_bounds, first_bad, segment_of


@numba.njit(cache=True, nogil=True)
def voxel_range(t, x, y, p, i0, i1, first, t_base, scale, num_base, span, lo_dest, lo_off, hi_dest, hi_off,
                has_hi, width, height):
    """Split events i0..i1 (all in one bin) between their lower plane and, if `has_hi`, the upper one.

    Each event is checked as it is added (inside the sensor, polarity 0/1, not earlier than the event
    before it; `first` is the selection's first event, the only one not compared with a predecessor).
    Returns -1, or the index of the first invalid event, where accumulation stops.
    """
    if i0 >= i1:
        return -1
    prev = time_before(t, i0, first)
    row = np.uint64(width)
    lo_base = np.uint64(lo_off)
    hi_base = np.uint64(hi_off)
    last = np.uint64(i1 - 1)
    for i in range(np.uint64(i0), np.uint64(i1)):
        ahead = min(i + np.uint64(PREFETCH_DISTANCE), last)
        pixel_ahead = np.uint64(y[ahead]) * row + np.uint64(x[ahead])
        prefetch_for_write(lo_dest, lo_base + pixel_ahead)
        if has_hi:
            prefetch_for_write(hi_dest, hi_base + pixel_ahead)
        invalid, xi, yi, pi, ti = read_checked(t, x, y, p, i, prev, width, height)
        if invalid:
            return np.int64(i)
        prev = ti
        num = (ti - t_base) * scale - num_base
        sign = 2 * np.int64(pi) - 1
        pixel = yi * row + xi
        lo_dest[lo_base + pixel] += sign * (span - num)
        if has_hi:
            hi_dest[hi_base + pixel] += sign * num
    return -1


@numba.njit(cache=True, nogil=True)
def voxel_serial(t, x, y, p, starts, t_base, span, acc, width, height):
    """Accumulate every bin of events into the flat int64 (bins * plane) accumulator; returns -1 or the
    index of the first invalid event."""
    bins = len(starts) - 1
    scale = bins - 1
    plane = height * width
    for j in range(bins):
        bad = voxel_range(t, x, y, p, starts[j], starts[j + 1], starts[0], t_base, scale, j * span, span,
                          acc, j * plane, acc, (j + 1) * plane, j + 1 < bins, width, height)
        if bad >= 0:
            return bad
    return -1


@numba.njit(cache=True, nogil=True, parallel=True)
def voxel_parallel(t, x, y, p, starts, t_base, span, acc, private, width, height):
    """Same result as voxel_serial, with `private.shape[0]` chunks of events accumulated concurrently."""
    bins = len(starts) - 1
    scale = bins - 1
    plane = height * width
    chunks = private.shape[0]
    first_plane = np.zeros(chunks, np.int64)
    last_shared = np.full(chunks, -1, np.int64)
    bad = np.full(chunks, -1, np.int64)
    for k in numba.prange(chunks):
        a, b = chunk_bounds(starts, k, chunks)
        if a >= b:
            continue
        jf = segment_of(starts, a)
        first_plane[k] = jf
        limit = segment_of(starts, a - 1) + 1 if a > starts[0] else -1
        last_shared[k] = limit
        mine = private[k]
        for j in range(jf, bins):
            s = max(a, starts[j])
            e = min(b, starts[j + 1])
            if s >= e:
                continue
            if j <= limit:
                lo_dest, lo_off = mine, (j - jf) * plane
            else:
                lo_dest, lo_off = acc, j * plane
            if j + 1 <= limit:
                hi_dest, hi_off = mine, (j + 1 - jf) * plane
            else:
                hi_dest, hi_off = acc, (j + 1) * plane
            bad[k] = voxel_range(t, x, y, p, s, e, starts[0], t_base, scale, j * span, span, lo_dest, lo_off,
                                 hi_dest, hi_off, j + 1 < bins, width, height)
            if bad[k] >= 0:
                break
    found = first_bad(bad)
    if found >= 0:
        return found
    for k in range(1, chunks):
        for q in range(first_plane[k], min(last_shared[k], bins - 1) + 1):
            src = (q - first_plane[k]) * plane
            for c in numba.prange(plane):
                acc[q * plane + c] += private[k, src + c]
    return -1


@numba.njit(cache=True, nogil=True)
def voxel_finish(acc, span, out):
    """out = acc / span as float32 (one correctly rounded float64 division per cell, then a cast)."""
    for c in range(len(acc)):
        out[c] = np.float32(acc[c] / span)
