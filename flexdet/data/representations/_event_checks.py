"""The per-event check of the kernels that validate events as they read them (count and voxel kernels):
inside the sensor, polarity 0 or 1, not earlier than the event before. Casting to unsigned makes a negative
value of a signed column huge, so one compare per coordinate covers both ends of the range."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def time_before(t, i0, first):
    """The time event i0 must not precede: its predecessor's, or its own when i0 is the selection's first."""
    return t[i0 - 1] if i0 > first else t[i0]


@numba.njit(cache=True, nogil=True)
def read_checked(t, x, y, p, i, prev, width, height):
    """(invalid, x, y, p, t) of event i, with x, y, p as int64; `invalid` when it lies outside width x height,
    has a polarity other than 0/1 or is earlier than `prev`."""
    xi = np.uint64(x[i])
    yi = np.uint64(y[i])
    pi = np.uint64(p[i])
    ti = t[i]
    invalid = (xi >= np.uint64(width)) | (yi >= np.uint64(height)) | (pi > 1) | (ti < prev)
    return invalid, np.int64(xi), np.int64(yi), np.int64(pi), ti
