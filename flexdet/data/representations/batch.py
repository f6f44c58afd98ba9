"""One configuration for "which representation", applied to one window or to many windows in one call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexdet.data.representations._batch_kernels import (
    counts_batch,
    counts_one,
    surfaces_batch,
    surfaces_one,
    voxels_batch,
    voxels_one,
)
from flexdet.data.representations._columns import (
    MAX_BINS,
    EventsLike,
    check_order_outside,
    check_sensor_size,
    event_columns,
    validate_columns,
    whole_number,
)
from flexdet.data.representations._dispatch import PARALLEL_SCAN_MIN_EVENTS, deliver
from flexdet.data.representations._segments import search_left
from flexdet.data.representations.kinds import COUNTING, KINDS, channels_per_window
from flexdet.errors import ConfigError


@dataclass
class RepresentationConfig:
    """Which representation to build and its parameters (a YAML-backed dataclass).

    time_norm: "window" times events by the window [t_start, t_end); "events" by the window's first and
    last event (RVT's preprocessing). clip: None = 10 (stacked histogram, RVT) or 65535 (event frame).
    tau_us (time surface): None = half the span.
    """

    kind: str = "stacked_histogram"
    bins: int = 10
    clip: int | None = None
    tau_us: float | None = None
    time_norm: str = "window"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"representation kind {self.kind!r} is not one of {KINDS}")
        if self.time_norm not in ("window", "events"):
            raise ConfigError(f"time_norm must be 'window' or 'events', got {self.time_norm!r}")
        whole_number("bins", self.bins, 1, MAX_BINS)
        if self.clip is not None:
            whole_number("clip", self.clip, 1, 65535)
        limit = 65535 if self.kind == "event_frame" else 255
        if self.kind in COUNTING and not 1 <= self.count_clip <= limit:
            raise ConfigError(f"clip must be in [1, {limit}] for {self.kind}, got {self.clip}")
        if self.tau_us is not None and not self.tau_us > 0:
            raise ConfigError(f"tau_us must be positive, got {self.tau_us}")

    @property
    def count_clip(self) -> int:
        """The saturation value of the counting representations."""
        if self.clip is not None:
            return int(self.clip)
        return 65535 if self.kind == "event_frame" else 10

    @property
    def channels(self) -> int:
        return channels_per_window(self.kind, self.bins)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype({"stacked_histogram": np.uint8, "event_frame": np.uint16}.get(self.kind, np.float32))


def build_windows(events: EventsLike, height: int, width: int, window_ends, window_us,
                  config: RepresentationConfig | None = None, *, timing: np.ndarray | None = None,
                  as_tensor: bool = False):
    """(N, C, H, W) representations of the windows [end - window_us, end) for each of the N `window_ends`
    (`window_us` one length for all, or one per window).

    One call validates the events the windows cover once and builds the windows in parallel (one window
    per thread, each exactly as the single-window function would build it). `timing`: the sorted times of
    the events `events` were sampled from, whose first and last in a window time its bins under time_norm
    "events" (counting kinds; a subsampled histogram then keeps the bins of the full one).
    """
    config = config or RepresentationConfig()
    check_sensor_size(height, width)
    ends = np.ascontiguousarray(window_ends, dtype=np.int64).reshape(-1)
    lengths = np.broadcast_to(np.asarray(window_us, dtype=np.int64), ends.shape)
    if np.any(lengths < 0):
        raise ConfigError(f"window_us must be >= 0, got {window_us}")
    starts = np.ascontiguousarray(ends - lengths)
    columns = event_columns(events)
    t, x, y, p = columns
    out = np.zeros((len(ends), config.channels, height, width), config.dtype)
    if len(ends) == 0:
        return deliver(out, as_tensor)
    lo = int(search_left(t, 0, len(t), int(starts.min())))
    hi = int(search_left(t, lo, len(t), int(ends.max())))
    validate_columns(columns, width, height, lo, hi, parallel=hi - lo >= PARALLEL_SCAN_MIN_EVENTS)
    flat = out.reshape(len(ends), -1)
    by_events = config.time_norm == "events"
    plane = height * width
    if timing is not None and config.kind not in COUNTING:
        raise ConfigError(f"build_windows: `timing` applies to the counting representations, not {config.kind}")
    one = len(ends) == 1  # a single window: no parallel region (see _batch_kernels.counts_one)
    if config.kind in COUNTING:
        bins = config.bins if config.kind == "stacked_histogram" else 1
        timing = t if timing is None else _sorted_timing(timing)
        (counts_one if one else counts_batch)(t, x, y, p, timing, starts, ends, by_events, bins, flat, width, height,
                                              config.count_clip)
    elif config.kind == "voxel_grid":
        (voxels_one if one else voxels_batch)(t, x, y, p, starts, ends, by_events, config.bins, flat, width, height)
    else:
        (surfaces_one if one else surfaces_batch)(t, x, y, p, starts, ends, by_events, float(config.tau_us or 0.0),
                                                  flat, width, plane)
    return deliver(out, as_tensor)


def _sorted_timing(timing: np.ndarray) -> np.ndarray:
    """`timing` as 1-D int64, refused (FlexdetError) unless sorted: windows are binary-searched in it."""
    timing = np.ascontiguousarray(timing, dtype=np.int64).reshape(-1)
    check_order_outside(timing, 0, 0, "timing events")
    return timing


def make_representation(events: EventsLike, height: int, width: int, config: RepresentationConfig,
                        t_start: int | None = None, t_end: int | None = None, *, as_tensor: bool = False):
    """The representation `config` names for one window (or the events' own span when t_start/t_end are None)."""
    from flexdet.data.representations import event_frame, stacked_histogram, time_surface, voxel_grid

    if config.time_norm == "events" and t_start is not None:
        t = event_columns(events)[0]
        lo = int(search_left(t, 0, len(t), t_start))
        hi = int(search_left(t, lo, len(t), t_end))
        check_order_outside(t, lo, hi)
        events = events[lo:hi] if isinstance(events, np.ndarray) else {k: events[k][lo:hi] for k in "txyp"}
        t_start = t_end = None
    if config.kind == "stacked_histogram":
        return stacked_histogram(events, height, width, config.bins, t_start, t_end, config.count_clip,
                                 as_tensor=as_tensor)
    if config.kind == "voxel_grid":
        return voxel_grid(events, height, width, config.bins, t_start, t_end, as_tensor=as_tensor)
    if config.kind == "time_surface":
        return time_surface(events, height, width, config.tau_us, t_start, t_end, as_tensor=as_tensor)
    return event_frame(events, height, width, t_start, t_end, config.count_clip, as_tensor=as_tensor)
