"""Numba kernels that build many windows at once (dataset preprocessing): one window per parallel task,
each with the serial kernel, so every window equals what the single-window functions return. The caller
validates the events all windows cover once, so the kernels' own per-event findings are not needed."""

from __future__ import annotations

import numba
import numpy as np

from flexdet.data.representations._count_kernels import count_serial
from flexdet.data.representations._segments import search_left, segment_starts, window_starts, window_timing
from flexdet.data.representations._surface_kernels import NEVER, decay, latest_range
from flexdet.data.representations._voxel_kernels import voxel_finish, voxel_serial


@numba.njit(cache=True, nogil=True)
def _window_range(t, t_start, t_end):
    lo = search_left(t, 0, len(t), t_start)
    return lo, search_left(t, lo, len(t), t_end)


@numba.njit(cache=True, nogil=True, parallel=True)
def counts_batch(t, x, y, p, timing, starts_us, ends_us, use_events_span, bins, out, width, height, clip):
    """out[i] (flat) = saturating counts of window i ([starts_us[i], ends_us[i])), binned by the window or,
    with `use_events_span`, by the first and last of the sorted times `timing` in it (`t` itself, or the
    times of the events `t` was sampled from)."""
    for i in numba.prange(len(ends_us)):
        lo, hi = _window_range(t, starts_us[i], ends_us[i])
        timing_lo, timing_hi = _window_range(timing, starts_us[i], ends_us[i])
        t_base, span = window_timing(timing, timing_lo, timing_hi, starts_us[i], ends_us[i], use_events_span)
        starts = segment_starts(t, lo, hi, t_base, span, bins, bins)
        count_serial(t, x, y, p, starts, out[i], width, height, clip)


@numba.njit(cache=True, nogil=True, parallel=True)
def voxels_batch(t, x, y, p, starts_us, ends_us, use_events_span, bins, out, width, height):
    """out[i] (flat) = voxel grid of window i, exact integer accumulation then one division."""
    for i in numba.prange(len(ends_us)):
        lo, hi = _window_range(t, starts_us[i], ends_us[i])
        starts, t_base, span = window_starts(t, lo, hi, starts_us[i], ends_us[i], use_events_span, bins,
                                             max(bins - 1, 1))
        acc = np.zeros(bins * height * width, np.int64)
        voxel_serial(t, x, y, p, starts, t_base, span, acc, width, height)
        voxel_finish(acc, span, out[i])


@numba.njit(cache=True, nogil=True, parallel=True)
def surfaces_batch(t, x, y, p, starts_us, ends_us, use_events_span, tau_us, out, width, plane):
    """out[i] (flat) = time surface of window i (tau_us <= 0 means half the window or events' span)."""
    for i in numba.prange(len(ends_us)):
        lo, hi = _window_range(t, starts_us[i], ends_us[i])
        if use_events_span:
            t_ref = t[hi - 1] if hi > lo else 0
            span = t[hi - 1] - t[lo] if hi > lo else 0
        else:
            t_ref = ends_us[i]
            span = ends_us[i] - starts_us[i]
        tau = tau_us if tau_us > 0 else max(span, 1) / 2
        last = np.full(2 * plane, NEVER, np.int64)
        latest_range(t, x, y, p, lo, hi, last, plane, width)
        decay(last, t_ref, tau, out[i])


# The same kernels without a parallel loop, for a single window (a live stream's step). A parallel region
# of one task still hands it to a Numba worker and waits for it: when the workers have slept through a
# model's inference (onnxruntime runs its own threads), waking them cost more than building the window
# (measured: representation p50 on the onnxruntime backend 2x torch's, whose step kept the CPU busy).
counts_one = numba.njit(cache=True, nogil=True)(counts_batch.py_func)
voxels_one = numba.njit(cache=True, nogil=True)(voxels_batch.py_func)
surfaces_one = numba.njit(cache=True, nogil=True)(surfaces_batch.py_func)
