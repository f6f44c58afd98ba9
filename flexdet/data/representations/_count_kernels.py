"""Numba kernels for saturating per-pixel event counts in time bins (stacked histogram, event frame).

Output is a flat (2 * bins * plane) array, channel = polarity * bins + bin, plane = height * width.
The parallel kernel splits the events into equal contiguous chunks; a chunk counts straight into the
output except for its first bin when an earlier chunk also reached that bin, which it counts into a
private two-plane buffer merged afterwards with a saturating add. Since min(min(a, c) + min(b, c), c)
== min(a + b, c), the result equals the serial one exactly, and extra memory is 2 planes per thread.
"""

from __future__ import annotations

import numba
import numpy as np

from flexdet.data.representations._segments import chunk_bounds


@numba.njit(cache=True, nogil=True)
def count_range(x, y, p, i0, i1, dest, offset, polarity_stride, width, clip):
    """Add one to dest[offset + p * polarity_stride + y * width + x] for events i0..i1, saturating at clip."""
    for i in range(i0, i1):
        k = offset + np.int64(p[i]) * polarity_stride + np.int64(y[i]) * width + np.int64(x[i])
        v = dest[k]
        if v < clip:
            dest[k] = v + 1


@numba.njit(cache=True, nogil=True)
def count_serial(x, y, p, starts, out, width, plane, clip):
    """Count every bin's events (bin j = starts[j]..starts[j+1]) into the flat output."""
    bins = len(starts) - 1
    for j in range(bins):
        count_range(x, y, p, starts[j], starts[j + 1], out, j * plane, bins * plane, width, clip)


@numba.njit(cache=True, nogil=True, parallel=True)
def count_parallel(x, y, p, starts, out, private, width, plane, clip):
    """Same result as count_serial, with `private.shape[0]` chunks of events counted concurrently."""
    bins = len(starts) - 1
    chunks = private.shape[0]
    shared_bin = np.full(chunks, -1, np.int64)
    for k in numba.prange(chunks):
        a, b = chunk_bounds(starts, k, chunks)
        for j in range(bins):
            s = max(a, starts[j])
            e = min(b, starts[j + 1])
            if s >= e:
                continue
            if s > starts[j]:
                count_range(x, y, p, s, e, private[k], 0, plane, width, clip)
                shared_bin[k] = j
            else:
                count_range(x, y, p, s, e, out, j * plane, bins * plane, width, clip)
    for k in range(1, chunks):
        j = shared_bin[k]
        if j < 0:
            continue
        for polarity in range(2):
            dst = polarity * bins * plane + j * plane
            src = polarity * plane
            for c in numba.prange(plane):
                total = np.int64(out[dst + c]) + np.int64(private[k, src + c])
                out[dst + c] = total if total < clip else clip
