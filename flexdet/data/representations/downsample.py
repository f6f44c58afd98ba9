"""Spatial downsampling of events by integrate-and-fire, as DAGr prepares half-resolution DSEC events.

Each low-resolution pixel (a factor x factor block) integrates the events falling into it and emits one
event (at the time, and with the polarity, of the event that made it fire) when its counter reaches the
threshold (factor**2 by default, i.e. one output event per block's worth of input), then resets.
mode="signed" is DAGr's rule: one counter per low-res pixel, ON adds +1, OFF -1, it fires at
|counter| >= threshold and subtracts the firing sign * threshold (DAGr keeps this counter as a float that
steps by 1/factor**2; integers are the same rule without rounding). mode="polarity" keeps one counter
per low-res pixel and polarity. Written by hand: the counter state is sequential per pixel and no event
library implements it.
"""

from __future__ import annotations

import numba
import numpy as np

from flexdet.data.events import EVENT_DTYPE
from flexdet.data.representations._columns import (
    EventsLike,
    check_sensor_size,
    event_columns,
    validate_columns,
)
from flexdet.errors import ConfigError


@numba.njit(cache=True, nogil=True)
def _fire_mask(x, y, p, factor, low_width, low_plane, threshold, signed, state, keep):
    """keep[i] = True where event i makes its low-res counter fire; `state` carries counters across calls."""
    for i in range(len(x)):
        cell = (np.int64(y[i]) // factor) * low_width + np.int64(x[i]) // factor
        if signed:
            sign = 2 * np.int64(p[i]) - 1
            value = state[cell] + sign
            if abs(value) >= threshold:
                value -= sign * threshold
                keep[i] = True
            state[cell] = value
        else:
            cell += np.int64(p[i]) * low_plane
            value = state[cell] + 1
            if value >= threshold:
                value = 0
                keep[i] = True
            state[cell] = value


def downsampled_size(height: int, width: int, factor: int = 2) -> tuple[int, int]:
    """(height, width) of the low-resolution sensor: ceil(size / factor), so border pixels keep a cell."""
    return -(-int(height) // factor), -(-int(width) // factor)


def downsample_events(events: EventsLike, height: int, width: int, factor: int = 2, mode: str = "signed",
                      threshold: int | None = None, state: np.ndarray | None = None) -> np.ndarray:
    """Events of the (ceil(H/f), ceil(W/f)) sensor fired by integrate-and-fire cells, as an EVENT_DTYPE array.

    Pass the same `state` (int32, shape (1 or 2, H', W'), zeros to begin) to consecutive chunks of one
    stream to carry the counters across chunk borders; it is updated in place.
    """
    check_sensor_size(height, width)
    if int(factor) < 1:
        raise ConfigError(f"downsampling factor must be >= 1, got {factor}")
    if mode not in ("signed", "polarity"):
        raise ConfigError(f"mode must be 'signed' or 'polarity', got {mode!r}")
    threshold = factor * factor if threshold is None else int(threshold)
    if threshold < 1:
        raise ConfigError(f"threshold must be >= 1, got {threshold}")
    columns = event_columns(events)
    validate_columns(columns, width, height)
    low_h, low_w = downsampled_size(height, width, factor)
    layers = 1 if mode == "signed" else 2
    if state is None:
        state = np.zeros((layers, low_h, low_w), np.int32)
    elif state.shape != (layers, low_h, low_w) or state.dtype != np.int32 or not state.flags.c_contiguous:
        raise ConfigError(f"state must be a C-contiguous int32 array of shape {(layers, low_h, low_w)}, "
                          f"got {state.dtype} {state.shape}")
    t, x, y, p = columns
    keep = np.zeros(len(t), np.bool_)
    _fire_mask(x, y, p, factor, low_w, low_h * low_w, threshold, mode == "signed", state.reshape(-1), keep)
    out = np.empty(int(keep.sum()), EVENT_DTYPE)
    out["t"] = t[keep]
    out["x"] = x[keep] // factor
    out["y"] = y[keep] // factor
    out["p"] = p[keep]
    return out
