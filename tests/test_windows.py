"""Windowing at any rate (exact integer window ends, one pass over a recording) and the batched builder."""

from __future__ import annotations

import numpy as np
import pytest

from flexdet.config import from_dict
from flexdet.data.clock import window_of
from flexdet.data.events import make_events
from flexdet.data.representations import (
    RepresentationConfig,
    build_windows,
    event_frame,
    iter_windows,
    make_representation,
    stacked_histogram,
    time_surface,
    voxel_grid,
    window_bounds,
)
from flexdet.errors import ConfigError, FlexdetError


def random_events(n, height, width, t_end=200_000, seed=0):
    rng = np.random.default_rng(seed)
    return make_events(np.sort(rng.integers(0, t_end, n)), rng.integers(0, width, n), rng.integers(0, height, n),
                       rng.integers(0, 2, n))


class MemoryRecording:
    """A tiny reader stand-in: events in memory, `read(t0, t1)` returns [t0, t1) and counts what it served."""

    def __init__(self, events, width, height):
        self.events, self.width, self.height = events, width, height
        self.t_start, self.t_end = int(events["t"][0]), int(events["t"][-1]) + 1
        self.served = 0

    def read(self, t0, t1):
        t = self.events["t"]
        chunk = self.events[np.searchsorted(t, t0):np.searchsorted(t, t1)].copy()
        self.served += len(chunk)
        return chunk


@pytest.mark.parametrize("rate", [180, 22.5, 1000, 29.97])
def test_rate_windows_end_on_exact_rounded_steps(rate):
    starts, ends = window_bounds(1_000, 1_000 + 3_600 * 10**6, rate_hz=rate)
    # Independent exact reference: k * 1e6 / rate with the rate as a decimal fraction, rounded half up.
    num, den = {180: (180, 1), 22.5: (45, 2), 1000: (1000, 1), 29.97: (2997, 100)}[rate]
    k = np.arange(1, len(ends) + 1, dtype=np.int64)
    expected = 1_000 + (2 * k * 10**6 * den + num) // (2 * num)
    assert np.array_equal(ends, expected)
    assert len(ends) == int(3_600 * rate + 1e-9)  # an hour at `rate` without drift
    assert np.array_equal(starts[1:], ends[:-1]) and starts[0] == 1_000  # tiled: no gap, no overlap
    # the window a rate stands for is the first step's length, and its steps alternate around it within 1 µs
    assert window_of(rate) == ends[0] - 1_000
    assert np.abs(np.diff(ends) - 10**6 * den / num).max() < 1


def test_stride_and_overlap():
    starts, ends = window_bounds(0, 20_000, window_us=10_000, stride_us=5_000)
    assert ends.tolist() == [5_000, 10_000, 15_000, 20_000] and (ends - starts == 10_000).all()
    starts, ends = window_bounds(0, 20_000, window_us=3_000, rate_hz=250)
    assert ends.tolist() == [4_000, 8_000, 12_000, 16_000, 20_000] and (ends - starts == 3_000).all()
    assert window_bounds(0, 4_999, stride_us=5_000)[1].size == 0
    for bad in (dict(), dict(rate_hz=100, stride_us=10), dict(rate_hz=-1), dict(stride_us=2.5), dict(window_us=0)):
        with pytest.raises(ConfigError):
            window_bounds(0, 10, **bad)


def test_array_windows_hold_exactly_their_events():
    ev = random_events(50_000, 20, 30)
    windows = list(iter_windows(ev, rate_hz=180, width=30, height=20))
    t = ev["t"]
    for w in windows:
        assert np.array_equal(w.events, ev[(t >= w.t_start) & (t < w.t_end)])
    assert sum(len(w.events) for w in windows) == np.count_nonzero(t < windows[-1].t_end)
    overlapping = list(iter_windows(ev, window_us=20_000, stride_us=7_000))
    for w in overlapping:
        assert w.t_end - w.t_start == 20_000
        assert np.array_equal(w.events, ev[(t >= w.t_start) & (t < w.t_end)])


@pytest.mark.parametrize("kwargs", [dict(rate_hz=180), dict(window_us=20_000, stride_us=7_000),
                                    dict(window_us=3_000, stride_us=10_000)])
def test_recording_windows_equal_array_windows_and_read_each_event_once(kwargs):
    ev = random_events(50_000, 20, 30, seed=1)
    recording = MemoryRecording(ev, 30, 20)
    from_recording = list(iter_windows(recording, **kwargs))
    from_array = list(iter_windows(ev, t_start=recording.t_start, t_end=recording.t_end, **kwargs))
    assert len(from_recording) == len(from_array) > 10
    for a, b in zip(from_recording, from_array):
        assert (a.index, a.t_start, a.t_end) == (b.index, b.t_start, b.t_end)
        assert np.array_equal(a.events, b.events)
    assert recording.served <= len(ev)


def test_recording_with_bad_events_raises():
    ev = random_events(5_000, 20, 30, seed=2)
    ev["y"][4_321] = 20
    with pytest.raises(FlexdetError, match="event .* has y=20"):
        list(iter_windows(MemoryRecording(ev, 30, 20), rate_hz=100))
    with pytest.raises(FlexdetError, match="event 4321 has y=20"):
        list(iter_windows(ev, rate_hz=100, width=30, height=20))


@pytest.mark.parametrize("kind", ["stacked_histogram", "voxel_grid", "time_surface", "event_frame"])
@pytest.mark.parametrize("time_norm", ["window", "events"])
def test_batched_builder_equals_single_windows(kind, time_norm):
    h, w = 24, 32
    ev = random_events(60_000, h, w, seed=3)
    config = RepresentationConfig(kind=kind, bins=5, clip=7, time_norm=time_norm)
    ends = np.array([10_000, 50_000, 50_001, 120_000, 199_999, 250_000])
    batch = build_windows(ev, h, w, ends, 30_000, config)
    assert batch.shape == (len(ends), config.channels, h, w) and batch.dtype == config.dtype
    for i, end in enumerate(ends):
        single = make_representation(ev, h, w, config, int(end) - 30_000, int(end))
        assert np.array_equal(batch[i], single), (kind, i)
    if kind == "stacked_histogram" and time_norm == "window":
        t = ev["t"]
        sel = ev[(t >= 20_000) & (t < 50_000)]
        b = (sel["t"].astype(np.int64) - 20_000) * 5 // 30_000
        ref = np.zeros((2, 5, h, w), np.int64)
        np.add.at(ref, (sel["p"], b, sel["y"], sel["x"]), 1)
        assert np.array_equal(batch[1], np.minimum(ref, 7).reshape(10, h, w))


def test_make_representation_dispatch_and_config_yaml():
    ev = random_events(5_000, 10, 12, seed=4)
    assert np.array_equal(make_representation(ev, 10, 12, RepresentationConfig("voxel_grid", bins=4), 0, 100_000),
                          voxel_grid(ev, 10, 12, 4, 0, 100_000))
    assert np.array_equal(make_representation(ev, 10, 12, RepresentationConfig("time_surface", tau_us=5e3), 0, 10**5),
                          time_surface(ev, 10, 12, 5e3, 0, 100_000))
    assert np.array_equal(make_representation(ev, 10, 12, RepresentationConfig("event_frame"), 0, 10**5),
                          event_frame(ev, 10, 12, 0, 100_000))
    config = from_dict(RepresentationConfig, {"kind": "stacked_histogram", "bins": 3, "time_norm": "events"})
    sel = ev[ev["t"] < 100_000]
    assert np.array_equal(make_representation(ev, 10, 12, config, 0, 100_000), stacked_histogram(sel, 10, 12, 3))
    with pytest.raises(ConfigError):
        RepresentationConfig(kind="optical_flow")


def test_batched_builder_rejects_bad_events():
    ev = random_events(5_000, 10, 12, seed=5)
    ev["x"][100] = 12
    with pytest.raises(FlexdetError, match="event 100 has x=12"):
        build_windows(ev, 10, 12, [50_000, 100_000], 50_000)


def test_fine_grid_is_the_clock_stepping_each_gap():
    """FAL's teacher grid splits each gap into `factor` steps exactly as a stream with stride gap / factor ends them."""
    from fractions import Fraction

    from flexdet.data.clock import fine_grid, step_end

    base = np.array([0, 50_000, 100_003, 150_001, 210_000])
    for factor in (1, 2, 3, 7, 9):
        expected = [step_end(int(a), j, Fraction(int(b - a), factor)) for a, b in zip(base[:-1], base[1:])
                    for j in range(factor)] + [int(base[-1])]
        assert fine_grid(base, factor).tolist() == expected
    with pytest.raises(ConfigError, match="factor"):
        fine_grid(base, 0)
