"""The one event array every part of flexdet speaks: a numpy structured array of (t, x, y, p).

`t` is int64 microseconds in the recording's own clock, `x`/`y` uint16 pixel coordinates, `p` uint8
polarity in {0 (OFF), 1 (ON)}. Arrays are sorted by `t` (non-decreasing) once a reader returns them.
"""

from __future__ import annotations

import numpy as np

from flexdet.errors import FlexdetError

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def empty_events(n: int = 0) -> np.ndarray:
    """An event array of length `n` (zeros), e.g. to fill in place."""
    return np.zeros(n, dtype=EVENT_DTYPE)


def make_events(t, x, y, p) -> np.ndarray:
    """Pack four equal-length sequences into an EVENT_DTYPE array (polarity: any non-zero becomes 1)."""
    t = np.asarray(t)
    n = len(t)
    for name, column in (("x", x), ("y", y), ("p", p)):
        if len(column) != n:
            raise ValueError(f"make_events: '{name}' has {len(column)} entries, 't' has {n}")
    events = np.empty(n, dtype=EVENT_DTYPE)
    events["t"] = t
    events["x"] = x
    events["y"] = y
    events["p"] = np.asarray(p) != 0
    return events


def check_events(events: np.ndarray, width: int | None = None, height: int | None = None,
                 source: str = "events") -> np.ndarray:
    """Check dtype, coordinate range and polarity; return `events` unchanged or raise FlexdetError.

    This is the gate in front of every Numba kernel: kernels index arrays without bounds checks, so an
    out-of-range coordinate must be stopped here, with the index of the first bad event.
    """
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise FlexdetError(f"{source}: expected a structured array with fields t, x, y, p")
    missing = [f for f in ("t", "x", "y", "p") if f not in events.dtype.names]
    if missing:
        raise FlexdetError(f"{source}: event array lacks field(s) {missing}")
    if len(events) == 0:
        return events
    for field, limit in (("x", width), ("y", height)):
        if limit is None:
            continue
        column = events[field]
        bad = np.flatnonzero((column < 0) | (column >= limit))
        if len(bad):
            i = int(bad[0])
            raise FlexdetError(f"{source}: event {i} has {field}={int(column[i])} outside the sensor "
                               f"({field} must be < {limit}); {len(bad)} such event(s)")
    bad_p = np.flatnonzero(events["p"] > 1)
    if len(bad_p):
        i = int(bad_p[0])
        raise FlexdetError(f"{source}: event {i} has polarity {int(events['p'][i])}, expected 0 or 1")
    return events


def time_slice(events: np.ndarray, t_start: int | None = None, t_end: int | None = None) -> np.ndarray:
    """The events with t in [t_start, t_end) of a time-sorted array, as a view (binary search).

    Bounds beyond the int64 range select everything on that side (numpy would compare them as float64,
    where 2**63 - 1 and 2**63 are equal, and drop the last event).
    """
    lo = 0 if t_start is None else _search(events["t"], t_start)
    hi = len(events) if t_end is None else _search(events["t"], t_end)
    return events[lo:max(lo, hi)]


def _search(t: np.ndarray, value: int) -> int:
    value = int(value)
    if value < _INT64_MIN:
        return 0
    if value > _INT64_MAX:
        return len(t)
    return int(np.searchsorted(t, np.int64(value), side="left"))
