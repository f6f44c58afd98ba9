"""Cutting a recording or an event array into windows of any length and stride, in one pass.

Window k (k = 1, 2, ...) ends at t0 + round(k * stride) in integer microseconds, by the step clock
(`flexdet.data.clock`). A window is [end - window_us, end); without window_us, consecutive windows tile
time: [end_{k-1}, end_k).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np

from flexdet.data.clock import step_ends
from flexdet.data.events import empty_events
from flexdet.data.representations._columns import event_columns, validate_columns
from flexdet.data.representations._dispatch import PARALLEL_SCAN_MIN_EVENTS
from flexdet.data.representations._segments import search_left
from flexdet.errors import ConfigError, FlexdetError


class WindowSource(Protocol):
    """What the windowing needs from a reader: a time range, a sensor size and `read(t0, t1)`."""

    t_start: int
    t_end: int
    width: int
    height: int

    def read(self, t0: int, t1: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Window:
    """Window `index` covers [t_start, t_end) µs; `events` are its events (a view for in-memory arrays)."""

    index: int
    t_start: int
    t_end: int
    events: np.ndarray


def window_bounds(t_first: int, t_last: int, *, rate_hz: float | str | Fraction | None = None,
                  window_us: int | None = None, stride_us: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) int64 of every window ending in (t_first, t_last]: end_k = t_first + round(k * stride)
    (the step clock, `flexdet.data.clock`).

    Give `rate_hz` or `stride_us` (or only `window_us`, meaning stride = window). A window may start
    before t_first when window_us > stride (the first windows of a stream are then partly empty).
    """
    if window_us is not None and (int(window_us) != window_us or int(window_us) < 1):
        raise ConfigError(f"window_us must be a positive whole number of µs, got {window_us}")
    if rate_hz is not None and stride_us is not None:
        raise ConfigError("give rate_hz or stride_us, not both")
    if rate_hz is None and stride_us is None:
        if window_us is None:
            raise ConfigError("give rate_hz, stride_us or window_us")
        stride_us = window_us
    ends = step_ends(t_first, t_last, rate_hz=rate_hz, stride_us=stride_us)
    if window_us is not None:
        starts = ends - int(window_us)
    else:
        starts = np.concatenate((np.array([int(t_first)], np.int64), ends[:-1]))[: len(ends)]
    return starts, ends


def iter_windows(source: np.ndarray | WindowSource, *, rate_hz: float | str | Fraction | None = None,
                 window_us: int | None = None, stride_us: int | None = None, t_start: int | None = None,
                 t_end: int | None = None, width: int | None = None,
                 height: int | None = None) -> Iterator[Window]:
    """Yield the windows of a time-sorted event array or of a recording, reading each event once.

    Windows end at t_start + k * stride (t_start defaults to the recording's start or the first event;
    t_end, exclusive, to the recording's end or one past the last event). Events are validated as they
    are read (sensor bounds when width/height are known, polarity, time order).
    """
    if isinstance(source, np.ndarray):
        return _array_windows(source, rate_hz, window_us, stride_us, t_start, t_end, width, height)
    return _recording_windows(source, rate_hz, window_us, stride_us, t_start, t_end)


def _array_windows(events, rate_hz, window_us, stride_us, t_start, t_end, width, height) -> Iterator[Window]:
    columns = event_columns(events)
    validate_columns(columns, width, height, source="events", parallel=len(events) >= PARALLEL_SCAN_MIN_EVENTS)
    t = columns[0]
    if len(t) == 0 and (t_start is None or t_end is None):
        return
    t0 = int(t[0]) if t_start is None else int(t_start)
    t1 = int(t[-1]) + 1 if t_end is None else int(t_end)
    starts, ends = window_bounds(t0, t1, rate_hz=rate_hz, window_us=window_us, stride_us=stride_us)
    lo = 0
    for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
        lo = int(search_left(t, lo, len(t), a))
        hi = int(search_left(t, lo, len(t), b))
        yield Window(k, a, b, events[lo:hi])


def _recording_windows(recording, rate_hz, window_us, stride_us, t_start, t_end) -> Iterator[Window]:
    t0 = int(recording.t_start) if t_start is None else int(t_start)
    t1 = int(recording.t_end) if t_end is None else int(t_end)
    starts, ends = window_bounds(t0, t1, rate_hz=rate_hz, window_us=window_us, stride_us=stride_us)
    source = f"recording {getattr(recording, 'path', type(recording).__name__)}"
    buffered = empty_events(0)
    read_until = None
    for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
        begin = a if read_until is None else max(a, read_until)
        if b > begin:
            fresh = recording.read(begin, b)
            validate_columns(event_columns(fresh, source), recording.width, recording.height, source=source)
            if len(fresh) and len(buffered) and fresh["t"][0] < buffered["t"][-1]:
                raise FlexdetError(f"{source}: read({begin}, {b}) returned events earlier than the previous read")
            buffered = np.concatenate((buffered, fresh)) if len(buffered) else fresh
            read_until = b
        t = buffered["t"]
        lo = int(search_left(t, 0, len(t), a))
        hi = int(search_left(t, lo, len(t), b))
        yield Window(k, a, b, buffered[lo:hi])
        if k + 1 < len(starts):
            buffered = buffered[int(search_left(t, 0, len(t), int(starts[k + 1]))):]
