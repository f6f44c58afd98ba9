"""The four event columns the kernels read, taken from a structured array or a mapping, and checked.

Numba kernels index their outputs without bounds checks, so every event is checked before it is used:
coordinates inside the sensor, polarity 0/1, time non-decreasing. Most entry points pass their columns
through `validate_columns` first; the count and voxel kernels check each event as they read it and
report the first bad index, which `raise_if_invalid` turns into the same error message.
"""

from __future__ import annotations

from collections.abc import Mapping

import numba
import numpy as np

from flexdet.data.representations._event_checks import read_checked, time_before
from flexdet.data.representations._segments import first_bad
from flexdet.errors import ConfigError, FlexdetError

EventsLike = np.ndarray | Mapping[str, np.ndarray]
Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

_NO_LIMIT = np.int64(2**62)
_PROBLEMS = {1: "x", 2: "y", 3: "polarity", 4: "t"}
MAX_SENSOR_SIDE = 1 << 16  # coordinates are uint16 in EVENT_DTYPE
MAX_BINS = 1 << 12
MAX_OUTPUT_BYTES = 1 << 32  # one window's output (and accumulator); more is a mistaken argument
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def event_columns(events: EventsLike, source: str = "events") -> Columns:
    """Return (t, x, y, p) as 1-D integer arrays without copying (field views of a structured array)."""
    if isinstance(events, np.ndarray) and events.dtype.names is not None:
        missing = [f for f in ("t", "x", "y", "p") if f not in events.dtype.names]
        if missing:
            raise FlexdetError(f"{source}: event array lacks field(s) {missing}")
        columns = tuple(events[f] for f in ("t", "x", "y", "p"))
    elif isinstance(events, Mapping):
        missing = [f for f in ("t", "x", "y", "p") if f not in events]
        if missing:
            raise FlexdetError(f"{source}: event mapping lacks key(s) {missing}")
        columns = tuple(np.asarray(events[f]) for f in ("t", "x", "y", "p"))
    else:
        raise FlexdetError(f"{source}: expected a structured event array or a mapping of t, x, y, p arrays, "
                           f"got {type(events).__name__}")
    n = len(columns[0])
    for name, column in zip("txyp", columns):
        if column.ndim != 1 or len(column) != n:
            raise FlexdetError(f"{source}: column '{name}' has shape {column.shape}, expected ({n},)")
        if not np.issubdtype(column.dtype, np.integer) and column.dtype != np.bool_:
            raise FlexdetError(f"{source}: column '{name}' has dtype {column.dtype}, expected integers")
    t, x, y, p = (c if c.dtype.isnative else c.astype(c.dtype.newbyteorder("=")) for c in columns)
    return t, x, y, p.view(np.uint8) if p.dtype == np.bool_ else p


@numba.njit(cache=True, nogil=True)
def _problem_at(t, x, y, p, i, first, width, height):
    """0 if event i is valid, else the code of its first problem (1 x, 2 y, 3 polarity, 4 time order)."""
    if x[i] < 0 or x[i] >= width:
        return 1
    if y[i] < 0 or y[i] >= height:
        return 2
    if p[i] < 0 or p[i] > 1:
        return 3
    if i > first and t[i] < t[i - 1]:
        return 4
    return 0


@numba.njit(cache=True, nogil=True)
def _first_invalid_in(t, x, y, p, start, stop, first, width, height):
    """Index of the first invalid event in [start, stop) or -1: a branch-free scan per block with the kernels'
    own per-event check (`read_checked`), then an exact pass over a block that has a hit."""
    block = 2048
    for b0 in range(start, stop, block):
        b1 = min(b0 + block, stop)
        bad = False
        prev = time_before(t, b0, first)
        for i in range(np.uint64(b0), np.uint64(b1)):
            bad |= read_checked(t, x, y, p, i, prev, width, height)[0]
            prev = t[i]
        if bad:
            prev = time_before(t, b0, first)
            for i in range(np.uint64(b0), np.uint64(b1)):
                if read_checked(t, x, y, p, i, prev, width, height)[0]:
                    return np.int64(i)
                prev = t[i]
    return -1


@numba.njit(cache=True, nogil=True, parallel=True)
def _first_invalid_parallel(t, x, y, p, start, stop, width, height, chunks):
    found = np.full(chunks, -1, np.int64)
    n = stop - start
    for k in numba.prange(chunks):
        found[k] = _first_invalid_in(t, x, y, p, start + n * k // chunks, start + n * (k + 1) // chunks,
                                     start, width, height)
    return first_bad(found)


def validate_columns(columns: Columns, width: int | None, height: int | None, start: int = 0,
                     stop: int | None = None, source: str = "events", parallel: bool = False) -> None:
    """Raise FlexdetError naming the first event in [start, stop) that is outside the sensor, has a
    polarity other than 0/1, or is earlier than the event before it."""
    t, x, y, p = columns
    stop = len(t) if stop is None else stop
    check_order_outside(t, start, stop, source)
    if stop <= start:
        return
    w = _NO_LIMIT if width is None else np.int64(width)
    h = _NO_LIMIT if height is None else np.int64(height)
    chunks = numba.get_num_threads()
    if parallel and chunks > 1:
        bad = _first_invalid_parallel(t, x, y, p, start, stop, w, h, chunks)
    else:
        bad = _first_invalid_in(t, x, y, p, start, stop, start, w, h)
    raise_if_invalid(columns, int(bad), start, width, height, source)


def raise_if_invalid(columns: Columns, index: int, start: int, width: int | None, height: int | None,
                     source: str = "events") -> None:
    """Raise FlexdetError describing event `index` (what a validating pass or kernel found); -1 means none.
    `start` is the first event of the checked range, the only one not compared with its predecessor."""
    if index < 0:
        return
    t, x, y, p = columns
    i = index
    w = _NO_LIMIT if width is None else np.int64(width)
    h = _NO_LIMIT if height is None else np.int64(height)
    problem = _PROBLEMS[int(_problem_at(t, x, y, p, i, start, w, h))]
    if problem == "x":
        detail = f"x={int(x[i])} outside the sensor (x must be < {width})"
    elif problem == "y":
        detail = f"y={int(y[i])} outside the sensor (y must be < {height})"
    elif problem == "polarity":
        detail = f"polarity {int(p[i])}, expected 0 or 1"
    else:
        detail = f"t={int(t[i])} earlier than event {i - 1} (t={int(t[i - 1])}); events must be time-sorted"
    raise FlexdetError(f"{source}: event {i} has {detail}")


@numba.njit(cache=True, nogil=True)
def _first_unsorted(t, start, stop):
    """First index i in [start, stop) with t[i] < t[i - 1] (start >= 1), or -1."""
    for i in range(start, stop):
        if t[i] < t[i - 1]:
            return i
    return -1


def check_order_outside(t: np.ndarray, lo: int, hi: int, source: str = "events") -> None:
    """Raise FlexdetError unless the times outside the selected events [lo, hi) are non-decreasing, up to and
    from the selection: a binary-searched window is only the window of time-sorted events, so an event out
    of order anywhere could have been left out of it. Costs nothing when the selection is the whole array."""
    n = len(t)
    bad = -1
    if lo > 0:
        bad = _first_unsorted(t, 1, min(lo + 1, n))
    if bad < 0 and hi < n:
        bad = _first_unsorted(t, max(hi, 1), n)
    if bad >= 0:
        raise FlexdetError(f"{source}: event {bad} has t={int(t[bad])} earlier than event {bad - 1} "
                           f"(t={int(t[bad - 1])}); events must be time-sorted")


def whole_number(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high]: integers (Python or numpy, not bool) only, so 2.5 bins or a 48.5
    pixel sensor are refused instead of truncated or failing inside numpy / Numba."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise ConfigError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def check_sensor_size(height: int, width: int) -> None:
    """Sensor sizes must be whole numbers in [1, 65536] (they size the output arrays)."""
    whole_number("sensor height", height, 1, MAX_SENSOR_SIDE)
    whole_number("sensor width", width, 1, MAX_SENSOR_SIDE)


def check_output_size(cells: int, itemsize: int, what: str) -> None:
    """Refuse an output of more than MAX_OUTPUT_BYTES before allocating it."""
    if cells * itemsize > MAX_OUTPUT_BYTES:
        raise ConfigError(f"{what} would take {cells * itemsize / 2**30:.1f} GiB (limit "
                          f"{MAX_OUTPUT_BYTES / 2**30:.0f} GiB); check bins and the sensor size")


def resolve_span(t_start: int | None, t_end: int | None) -> tuple[int | None, int | None]:
    """Both bounds or neither, whole numbers in the int64 range: a half-given window is ambiguous, a
    reversed one is an error."""
    if (t_start is None) != (t_end is None):
        raise ConfigError("give both t_start and t_end, or neither (then the events' own span is used)")
    if t_start is None:
        return None, None
    t_start = whole_number("t_start", t_start, _INT64_MIN, _INT64_MAX)
    t_end = whole_number("t_end", t_end, _INT64_MIN, _INT64_MAX)
    if t_end < t_start:
        raise ConfigError(f"window ends before it starts: t_start={t_start}, t_end={t_end}")
    return t_start, t_end
