"""Numba kernels for the time surface: the latest timestamp per (polarity, pixel), then exponential decay.

The parallel kernel gives each chunk of events a private "latest time" buffer and merges with max; on
time-sorted events that is the last write of the serial kernel, so both agree exactly. The decay is the
same scalar code in every path, so serial, parallel and batched results are identical bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

from flexdet.data.representations._segments import chunk_bounds

NEVER = np.iinfo(np.int64).min


@numba.njit(cache=True, nogil=True)
def latest_range(t, x, y, p, i0, i1, last, plane, width):
    """last[p * plane + y * width + x] = t for events i0..i1 (time-sorted, so the latest one stays); uint64
    indices as in _event_checks (no wraparound code per access)."""
    stride = np.uint64(plane)
    row = np.uint64(width)
    for i in range(np.uint64(i0), np.uint64(i1)):
        last[np.uint64(p[i]) * stride + np.uint64(y[i]) * row + np.uint64(x[i])] = t[i]


@numba.njit(cache=True, nogil=True, parallel=True)
def latest_parallel(t, x, y, p, lo, hi, last, private, plane, width):
    """Same result as latest_range over [lo, hi), with `private.shape[0]` chunks processed concurrently."""
    chunks = private.shape[0]
    bounds = np.array([lo, hi], np.int64)
    for k in numba.prange(chunks):
        a, b = chunk_bounds(bounds, k, chunks)
        latest_range(t, x, y, p, a, b, last if k == 0 else private[k], plane, width)
    for c in numba.prange(len(last)):
        m = last[c]
        for k in range(1, chunks):
            m = max(m, private[k, c])
        last[c] = m


@numba.njit(cache=True, nogil=True)
def decay(last, t_ref, tau, out):
    """out = exp(-(t_ref - last) / tau) where an event happened, 0 elsewhere."""
    for c in range(len(last)):
        if last[c] != NEVER:
            out[c] = np.float32(np.exp(-(t_ref - last[c]) / tau))
