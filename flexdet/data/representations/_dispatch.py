"""What every representation entry point does before and after its kernel: pick the events of the window,
validate them, choose serial or parallel, and hand back numpy or torch."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from flexdet.data.representations._columns import (
    Columns,
    EventsLike,
    check_order_outside,
    check_sensor_size,
    event_columns,
    resolve_span,
    validate_columns,
)
from flexdet.data.representations._segments import search_left
from flexdet.errors import ConfigError

# Below these sizes one thread is faster (measured on 2 cores, 640x480, best of 21 calls). The kernels that
# build an output pay ~1 ms to start the pool, fault in the private planes and merge them: at 130 k events a
# histogram took 0.32 ms on one thread and 1.12 ms on two; the two meet between 1 M and 2 M events. The
# validation scan has no private buffers and breaks even near 500 k events.
PARALLEL_MIN_EVENTS = 1_500_000
PARALLEL_SCAN_MIN_EVENTS = 1 << 19


@dataclass(frozen=True)
class Selection:
    """The events [lo, hi) of a window; t_start/t_end are None when the events' own span is used."""

    columns: Columns
    lo: int
    hi: int
    t_start: int | None
    t_end: int | None
    source: str = "events"

    @property
    def use_events_span(self) -> bool:
        return self.t_start is None


def select(events: EventsLike, height: int, width: int, t_start: int | None, t_end: int | None,
           source: str = "events", validate: bool = True) -> Selection:
    """Binary-search the window in the time-sorted events and validate exactly the events it holds
    (`validate=False` for kernels that check each event themselves and report the first bad one)."""
    check_sensor_size(height, width)
    columns = event_columns(events, source)
    t = columns[0]
    t_start, t_end = resolve_span(t_start, t_end)
    if t_start is None:
        lo, hi = 0, len(t)
    else:
        lo = int(search_left(t, 0, len(t), t_start))
        hi = int(search_left(t, lo, len(t), t_end))
    if validate:
        validate_columns(columns, width, height, lo, hi, source, parallel=hi - lo >= PARALLEL_SCAN_MIN_EVENTS)
    else:
        check_order_outside(t, lo, hi, source)
    return Selection(columns, lo, hi, t_start, t_end, source)


def check_span(chosen: Selection, factor: int, what: str) -> None:
    """Refuse a window whose span times `factor` leaves the int64 range the kernels compute in (bin edges
    are span * bin, voxel weights sum up to span per event): it would wrap around, not fail."""
    t = chosen.columns[0]
    if chosen.t_start is not None:
        span = chosen.t_end - chosen.t_start
    elif chosen.hi > chosen.lo:
        span = int(t[chosen.hi - 1]) - int(t[chosen.lo])
    else:
        span = 0
    if max(span, 1) * max(int(factor), 1) >= 1 << 62:
        raise ConfigError(f"{chosen.source}: a window of {span} µs is too long for {what} (span x {factor} "
                          f"must stay below 2**62)")


def thread_chunks(parallel: bool | None, n_events: int) -> int:
    """How many event chunks to process concurrently: 1 (serial) or the Numba thread count."""
    threads = numba.get_num_threads()
    if parallel is None:
        parallel = n_events >= PARALLEL_MIN_EVENTS
    return threads if parallel and threads > 1 else 1


def deliver(array: np.ndarray, as_tensor: bool):
    """Return the array itself, or a torch tensor sharing its memory."""
    if not as_tensor:
        return array
    import torch

    return torch.from_numpy(array)
