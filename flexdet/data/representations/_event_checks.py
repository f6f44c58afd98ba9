"""The per-event check of the kernels that validate events as they read them (count and voxel kernels):
inside the sensor, polarity 0 or 1, not earlier than the event before. Casting to unsigned makes a negative
value of a signed column huge, so one compare per coordinate covers both ends of the range.

The kernels index with uint64 (event indices and output offsets alike): for a signed index Numba emits
Python's negative-index wraparound (a shift, an and and an add per array access) and keeps every array's
stride and length live, which spilled registers in the counting loop; unsigned indices measured 1.45x
faster on the stacked histogram (one thread, 10 M events at 640x480). Mixing uint64 with int64 in Numba
arithmetic gives float64, so every operand of an index is cast to uint64 first."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def time_before(t, i0, first):
    """The time event i0 must not precede: its predecessor's, or its own when i0 is the selection's first."""
    return t[i0 - 1] if i0 > first else t[i0]


@numba.njit(cache=True, nogil=True)
def read_checked(t, x, y, p, i, prev, width, height):
    """(invalid, x, y, p, t) of event i (a uint64 index), with x, y, p as uint64; `invalid` when it lies
    outside width x height, has a polarity other than 0/1 or is earlier than `prev`."""
    xi = np.uint64(x[i])
    yi = np.uint64(y[i])
    pi = np.uint64(p[i])
    ti = t[i]
    invalid = (xi >= np.uint64(width)) | (yi >= np.uint64(height)) | (pi > 1) | (ti < prev)
    return invalid, xi, yi, pi, ti
