"""Time surface: per polarity and pixel, exp(-(t_ref - t_last) / tau) of the latest event before t_ref."""

from __future__ import annotations

import numpy as np

from flexdet.data.representations._columns import EventsLike, check_output_size
from flexdet.data.representations._dispatch import Selection, check_span, deliver, select, thread_chunks
from flexdet.data.representations._surface_kernels import NEVER, decay, latest_parallel, latest_range
from flexdet.errors import ConfigError


def time_surface(events: EventsLike, height: int, width: int, tau_us: float | None = None,
                 t_start: int | None = None, t_end: int | None = None, *, as_tensor: bool = False,
                 parallel: bool | None = None):
    """float32 (2, H, W), channel = polarity: exp(-(t_ref - t_last) / tau_us) where the pixel fired, 0 elsewhere.

    With t_start/t_end: events in [t_start, t_end), t_ref = t_end. Without: all events, t_ref = the last
    event's time. tau_us defaults to half the window (or half the events' span, at least 1 µs).
    """
    check_output_size(2 * height * width, 12, "the time surface")
    chosen = select(events, height, width, t_start, t_end)
    check_span(chosen, 1, "the time surface")
    t_ref, tau = surface_clock(chosen, tau_us)
    last = latest_times(chosen, height, width, parallel)
    out = np.zeros(2 * height * width, np.float32)
    decay(last, t_ref, tau, out)
    return deliver(out.reshape(2, height, width), as_tensor)


def surface_clock(chosen: Selection, tau_us: float | None) -> tuple[int, float]:
    """The time the surface is read at and the decay constant in µs."""
    t = chosen.columns[0]
    if chosen.t_end is not None:
        t_ref, span = chosen.t_end, chosen.t_end - chosen.t_start
    elif chosen.hi > chosen.lo:
        t_ref, span = int(t[chosen.hi - 1]), int(t[chosen.hi - 1] - t[chosen.lo])
    else:
        t_ref, span = 0, 0
    tau = max(span, 1) / 2 if tau_us is None else float(tau_us)
    if not tau > 0:
        raise ConfigError(f"tau_us must be positive, got {tau_us}")
    return t_ref, tau


def latest_times(chosen: Selection, height: int, width: int, parallel: bool | None) -> np.ndarray:
    """The flat int64 (2 * H * W) latest event time per polarity and pixel, NEVER where none fired."""
    t, x, y, p = chosen.columns
    plane = height * width
    last = np.full(2 * plane, NEVER, np.int64)
    chunks = thread_chunks(parallel, chosen.hi - chosen.lo)
    if chunks > 1:
        private = np.full((chunks, 2 * plane), NEVER, np.int64)
        latest_parallel(t, x, y, p, chosen.lo, chosen.hi, last, private, plane, width)
    else:
        latest_range(t, x, y, p, chosen.lo, chosen.hi, last, plane, width)
    return last
