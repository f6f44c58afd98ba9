"""Representations against plain-numpy references (np.add.at / bincount), on random and real events."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
import torch

from flexdet.data.events import make_events
from flexdet.data.representations import (
    downsample_events,
    event_frame,
    event_frame_torch,
    events_to_tensors,
    stacked_histogram,
    stacked_histogram_torch,
    time_surface,
    time_surface_torch,
    voxel_grid,
    voxel_grid_torch,
)
from flexdet.data.representations._columns import event_columns, validate_columns
from flexdet.errors import FlexdetError

REAL = Path(__file__).parents[1] / ".." / "shared" / "data" / "real"
REAL_FILES = {"evt2_gen3_640x480": (480, 640), "evt3_gen41_1280x720_pedestrians": (720, 1280),
              "ncars_obj_004397_td": (64, 64)}


# ---- plain numpy references -------------------------------------------------------------------------

def ref_histogram(ev, height, width, bins, t_start=None, t_end=None, clip=10):
    t, x, y, p = (ev[f].astype(np.int64) for f in "txyp")
    if t_start is None:
        if len(t) == 0:
            return np.zeros((2 * bins, height, width), np.uint8)
        span = max(t[-1] - t[0], 1)
        b = np.minimum((t - t[0]) * bins // span, bins - 1)
    else:
        keep = (t >= t_start) & (t < t_end)
        t, x, y, p = t[keep], x[keep], y[keep], p[keep]
        b = (t - t_start) * bins // (t_end - t_start)
    counts = np.zeros((2, bins, height, width), np.int64)
    np.add.at(counts, (p, b, y, x), 1)
    return np.minimum(counts, clip).astype(np.uint8).reshape(2 * bins, height, width)


def ref_voxel(ev, height, width, bins, t_start, t_end):
    t, x, y, p = (ev[f].astype(np.int64) for f in "txyp")
    keep = (t >= t_start) & (t < t_end)
    t, x, y, p = t[keep], x[keep], y[keep], p[keep]
    tn = (t - t_start) / (t_end - t_start) * (bins - 1)
    lower = np.floor(tn).astype(np.int64)
    frac = tn - lower
    polarity = 2.0 * p - 1.0
    grid = np.zeros((bins + 1, height, width), np.float64)
    np.add.at(grid, (lower, y, x), polarity * (1 - frac))
    np.add.at(grid, (lower + 1, y, x), polarity * frac)
    return grid[:bins]


def ref_surface(ev, height, width, tau, t_start, t_end):
    t, x, y, p = (ev[f].astype(np.int64) for f in "txyp")
    keep = (t >= t_start) & (t < t_end)
    last = np.full((2, height, width), np.iinfo(np.int64).min)
    np.maximum.at(last, (p[keep], y[keep], x[keep]), t[keep])
    return np.where(last > np.iinfo(np.int64).min, np.exp(-(t_end - last.astype(np.float64)) / tau), 0.0)


def ref_frame(ev, height, width):
    flat = (ev["p"].astype(np.int64) * height + ev["y"]) * width + ev["x"]
    return np.bincount(flat, minlength=2 * height * width).reshape(2, height, width)


def random_events(n, height, width, t_end=50_000, seed=0, clustered=False):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, t_end, n))
    if clustered:
        x = np.clip(rng.normal(width / 3, 6, n), 0, width - 1).astype(np.int64)
        y = np.clip(rng.normal(height / 2, 6, n), 0, height - 1).astype(np.int64)
    else:
        x, y = rng.integers(0, width, n), rng.integers(0, height, n)
    return make_events(t, x, y, rng.integers(0, 2, n))


def real_events(name):
    path = REAL / f"{name}.reference.npz"
    if not path.exists():
        pytest.skip(f"real recordings not found at {REAL} (shared data is absent)")
    data = np.load(path)
    return make_events(data["t"], data["x"], data["y"], data["p"])


# ---- random events ----------------------------------------------------------------------------------

@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("parallel", [False, True])
def test_random_events_match_numpy(clustered, parallel):
    h, w = 60, 80
    ev = random_events(300_000, h, w, seed=1, clustered=clustered)
    assert np.array_equal(stacked_histogram(ev, h, w, 10, 5_000, 45_000, parallel=parallel),
                          ref_histogram(ev, h, w, 10, 5_000, 45_000))
    assert np.array_equal(stacked_histogram(ev, h, w, 7, clip=200, parallel=parallel),
                          ref_histogram(ev, h, w, 7, clip=200))
    np.testing.assert_allclose(voxel_grid(ev, h, w, 5, 5_000, 45_000, parallel=parallel),
                               ref_voxel(ev, h, w, 5, 5_000, 45_000), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(time_surface(ev, h, w, 7_000.0, 5_000, 45_000, parallel=parallel),
                               ref_surface(ev, h, w, 7_000.0, 5_000, 45_000), rtol=1e-6, atol=1e-7)
    assert np.array_equal(event_frame(ev, h, w, parallel=parallel), ref_frame(ev, h, w))


def test_large_sensor_voxel_matches_numpy_and_parallel():
    h, w = 720, 1280  # two int64 planes of 7.4 MB each: every cell comes from L3 or memory, prefetched ahead
    ev = random_events(300_000, h, w, seed=8)
    serial = voxel_grid(ev, h, w, 5, 1_000, 49_000, parallel=False)
    np.testing.assert_allclose(serial, ref_voxel(ev, h, w, 5, 1_000, 49_000), rtol=1e-6, atol=1e-5)
    if numba.get_num_threads() > 1:
        assert np.array_equal(voxel_grid(ev, h, w, 5, 1_000, 49_000, parallel=True), serial)


def test_column_mapping_input_equals_structured_input():
    ev = random_events(5_000, 30, 40, seed=2)
    columns = {f: np.ascontiguousarray(ev[f]) for f in "txyp"}
    assert np.array_equal(stacked_histogram(columns, 30, 40, 4, 0, 50_000), stacked_histogram(ev, 30, 40, 4, 0, 50_000))
    assert np.array_equal(voxel_grid(columns, 30, 40, 3, 0, 50_000), voxel_grid(ev, 30, 40, 3, 0, 50_000))


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_real_recordings_match_numpy(name):
    ev = real_events(name)
    h, w = REAL_FILES[name]
    t0, t1 = int(ev["t"][0]), int(ev["t"][-1]) + 1
    assert np.array_equal(stacked_histogram(ev, h, w, 10, t0, t1), ref_histogram(ev, h, w, 10, t0, t1))
    assert np.array_equal(stacked_histogram(ev, h, w), ref_histogram(ev, h, w, 10))
    np.testing.assert_allclose(voxel_grid(ev, h, w, 5, t0, t1), ref_voxel(ev, h, w, 5, t0, t1), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(time_surface(ev, h, w, 5_000.0, t0, t1), ref_surface(ev, h, w, 5_000.0, t0, t1),
                               rtol=1e-6, atol=1e-7)
    assert np.array_equal(event_frame(ev, h, w), ref_frame(ev, h, w))


# ---- serial == parallel, bit for bit ------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["spread", "one_bin", "one_timestamp", "bursts"])
def test_parallel_equals_serial_exactly(layout):
    if numba.get_num_threads() < 2:
        pytest.skip("needs 2 Numba threads")
    h, w, n = 40, 50, 200_000
    rng = np.random.default_rng(3)
    t = {"spread": np.sort(rng.integers(0, 50_000, n)),
         "one_bin": np.sort(rng.integers(20_000, 21_000, n)),
         "one_timestamp": np.full(n, 12_345),
         "bursts": np.sort(np.concatenate([rng.integers(0, 100, n // 2),
                                           rng.integers(49_900, 50_000, n - n // 2)]))}[layout]
    ev = make_events(t, rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n))
    for bins in (1, 2, 5, 10):
        for span in ((0, 50_000), (None, None)):
            serial = voxel_grid(ev, h, w, bins, *span, parallel=False)
            assert np.array_equal(voxel_grid(ev, h, w, bins, *span, parallel=True), serial)
            serial = stacked_histogram(ev, h, w, bins, *span, clip=50, parallel=False)
            assert np.array_equal(stacked_histogram(ev, h, w, bins, *span, clip=50, parallel=True), serial)
    for span in ((0, 50_000), (None, None)):
        assert np.array_equal(time_surface(ev, h, w, None, *span, parallel=True),
                              time_surface(ev, h, w, None, *span, parallel=False))
    assert np.array_equal(event_frame(ev, h, w, parallel=True), event_frame(ev, h, w, parallel=False))


# ---- edge cases ---------------------------------------------------------------------------------------

def test_empty_window_and_empty_array():
    ev = make_events([100, 200], [1, 2], [1, 2], [1, 0])
    assert not stacked_histogram(ev, 4, 4, 3, 300, 400).any()
    assert not voxel_grid(ev, 4, 4, 3, 300, 400).any()
    assert not time_surface(ev, 4, 4, None, 300, 400).any()
    empty = ev[:0]
    assert stacked_histogram(empty, 4, 4, 3).shape == (6, 4, 4) and not stacked_histogram(empty, 4, 4, 3).any()
    assert not voxel_grid(empty, 4, 4, 3).any() and not event_frame(empty, 4, 4).any()


def test_one_event_by_hand():
    ev = make_events([1_500], [3], [2], [1])
    hist = stacked_histogram(ev, 4, 5, 4, 1_000, 2_000)
    assert hist.sum() == 1 and hist[1 * 4 + 2, 2, 3] == 1  # (1500 - 1000) * 4 / 1000 = 2
    vox = voxel_grid(ev, 4, 5, 3, 1_000, 2_000)  # tn = 0.5 * 2 = 1.0: all in bin 1
    assert vox[1, 2, 3] == 1.0 and np.count_nonzero(vox) == 1
    vox = voxel_grid(ev, 4, 5, 3, 1_200, 2_000)  # tn = 300 / 800 * 2 = 0.75
    assert vox[0, 2, 3] == np.float32(0.25) and vox[1, 2, 3] == np.float32(0.75)
    off = voxel_grid(make_events([1_500], [3], [2], [0]), 4, 5, 3, 1_200, 2_000)
    assert off[0, 2, 3] == np.float32(-0.25) and off[1, 2, 3] == np.float32(-0.75)
    surface = time_surface(ev, 4, 5, 250.0, 1_000, 2_000)
    assert surface[1, 2, 3] == np.float32(np.exp(-2.0)) and np.count_nonzero(surface) == 1
    # RVT rule with one event: span clamps to 1 µs, the event goes to bin 0.
    assert stacked_histogram(ev, 4, 5, 4)[4, 2, 3] == 1


def test_all_events_on_one_timestamp():
    ev = make_events([7] * 5, [0, 1, 1, 2, 3], [0, 0, 0, 1, 1], [1, 1, 1, 0, 1])
    hist = stacked_histogram(ev, 2, 4, 3)  # RVT rule: span 0 -> 1 µs, everything in bin 0
    assert hist[3, 0, 1] == 2 and hist[3, 0, 0] == 1 and hist[0, 1, 2] == 1 and hist.sum() == 5
    vox = voxel_grid(ev, 2, 4, 3)
    assert vox[0, 0, 1] == 2.0 and vox[0, 1, 2] == -1.0 and not vox[1:].any()
    assert np.array_equal(event_frame(ev, 2, 4), ref_frame(ev, 2, 4))


def test_events_exactly_on_bin_edges():
    # Window [0, 1000) with 10 bins: edges every 100 µs; also 3 bins (edges at 333.3 and 666.6 µs).
    t = [0, 99, 100, 199, 200, 333, 334, 666, 667, 999]
    ev = make_events(t, [0] * 10, [0] * 10, [1] * 10)
    hist = stacked_histogram(ev, 1, 1, 10, 0, 1_000, clip=255)[10:, 0, 0]
    assert hist.tolist() == [2, 2, 1, 2, 0, 0, 2, 0, 0, 1]
    hist3 = stacked_histogram(ev, 1, 1, 3, 0, 1_000, clip=255)[3:, 0, 0]
    assert hist3.tolist() == [6, 2, 2]  # 333 -> bin 0 (999/1000), 334 -> bin 1 (1002/1000); 666 -> 1, 667 -> 2
    # RVT rule: span = 999 - 0, the last event lands in the last bin although (999 - 0) * 10 / 999 = 10.
    rvt = stacked_histogram(ev, 1, 1, 10, clip=255)[10:, 0, 0]
    assert rvt[9] == 1 and rvt.tolist() == ref_histogram(ev, 1, 1, 10, clip=255)[10:, 0, 0].tolist()


def test_border_pixels_and_hot_pixel_clip():
    h, w = 7, 9
    border = make_events([1, 2, 3, 4], [0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 0, 1, 0])
    assert np.array_equal(stacked_histogram(border, h, w, 2, 0, 10), ref_histogram(border, h, w, 2, 0, 10))
    hot = make_events(np.arange(1_000), [w - 1] * 1_000, [h - 1] * 1_000, [1] * 1_000)
    hist = stacked_histogram(hot, h, w, 1, 0, 1_000, clip=10)
    assert hist.dtype == np.uint8 and hist[1, h - 1, w - 1] == 10  # 1000 events, saturated, not 1000 % 256
    assert stacked_histogram(hot, h, w, 1, 0, 1_000, clip=255)[1, h - 1, w - 1] == 255
    assert event_frame(hot, h, w)[1, h - 1, w - 1] == 1_000
    hotter = make_events(np.arange(70_000), [0] * 70_000, [0] * 70_000, [0] * 70_000)
    assert event_frame(hotter, h, w)[0, 0, 0] == 65_535  # saturates at the uint16 maximum, not 70000 % 65536
    assert event_frame(hotter, h, w, clip=100)[0, 0, 0] == 100


def test_events_outside_window_are_ignored():
    ev = make_events([5, 10, 15, 20, 25], [0, 1, 2, 3, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1])
    hist = stacked_histogram(ev, 2, 4, 1, 10, 20, clip=255)
    assert hist[1].tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]
    assert event_frame(ev, 2, 4, 10, 20)[1].tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]
    vox = voxel_grid(ev, 2, 4, 2, 10, 20)  # t=10 -> tn 0; t=15 -> tn 0.5; t=5, 20, 25 outside
    assert vox[0, 0].tolist() == [0, 1, 0.5, 0] and vox[1, 0].tolist() == [0, 0, 0.5, 0] and not vox[:, 1].any()


@pytest.mark.parametrize("field, value, message", [("x", 40, "x=40"), ("y", 30, "y=30"), ("p", 2, "polarity 2")])
def test_bad_events_raise_with_index(field, value, message):
    ev = random_events(1_000, 30, 40, seed=4)
    ev[field][617] = value
    for build in (lambda: stacked_histogram(ev, 30, 40), lambda: voxel_grid(ev, 30, 40, 5, 0, 50_000),
                  lambda: time_surface(ev, 30, 40), lambda: event_frame(ev, 30, 40, parallel=True)):
        with pytest.raises(FlexdetError, match=f"event 617 has {message}"):
            build()


@pytest.mark.parametrize("parallel", [False, True])
def test_kernels_name_the_first_bad_event_whichever_chunk_finds_it(parallel):
    """The count and voxel kernels check events as they read them; with 2 threads the chunks split at
    150,000, so a bad event there is checked against its predecessor in the other chunk. The voxel kernel
    prefetches the cells of the event 64 ahead before checking it: x=-1 sends that prefetch far outside
    the grid, which must neither fault nor change what is reported."""
    n = 300_000
    base = random_events(n, 30, 40, seed=7)
    builds = (lambda ev: stacked_histogram(ev, 30, 40, 10, parallel=parallel),
              lambda ev: voxel_grid(ev, 30, 40, 5, 0, 50_000, parallel=parallel),
              lambda ev: voxel_grid(ev, 600, 2_000, 5, 0, 50_000, parallel=parallel),  # planes beyond the caches
              lambda ev: event_frame(ev, 30, 40, parallel=parallel))
    for build in builds:
        cols = {k: base[k].astype(np.int64) for k in "txyp"}  # signed columns: negative values are possible
        cols["x"][250_000] = -1
        with pytest.raises(FlexdetError, match="event 250000 has x=-1 outside"):
            build(cols)
        cols["t"][150_000] = cols["t"][149_999] - 1
        with pytest.raises(FlexdetError, match="event 150000 has t=.* earlier than event 149999"):
            build(cols)
        cols["y"][120_000] = 600
        with pytest.raises(FlexdetError, match="event 120000 has y=600"):
            build(cols)


@pytest.mark.parametrize("parallel", [False, True])
def test_validation_scan_names_the_first_bad_event(parallel):
    """The scan that guards the time surface, windows and batches: blocks of 2048 checked branch-free, two
    chunks with 2 threads (split at 300,000 here), the lowest bad event reported either way."""
    base = random_events(600_000, 30, 40, seed=9)
    cols = {k: base[k].astype(np.int64) for k in "txyp"}
    validate_columns(event_columns(cols), 40, 30, parallel=parallel)
    cols["p"][450_001] = -1
    with pytest.raises(FlexdetError, match="event 450001 has polarity -1"):
        validate_columns(event_columns(cols), 40, 30, parallel=parallel)
    cols["t"][300_000] = cols["t"][299_999] - 1
    with pytest.raises(FlexdetError, match="event 300000 has t=.* earlier than event 299999"):
        validate_columns(event_columns(cols), 40, 30, parallel=parallel)
    with pytest.raises(FlexdetError, match="event 300000 has t="):
        time_surface(cols, 30, 40)  # 600 k events: the default dispatch scans in parallel where threads exist


def test_unsorted_events_and_bad_arguments_raise():
    ev = make_events([10, 5, 20], [0, 0, 0], [0, 0, 0], [1, 1, 1])
    with pytest.raises(FlexdetError, match="event 1 has t=5 earlier than event 0"):
        stacked_histogram(ev, 1, 1)
    good = make_events([1, 2], [0, 0], [0, 0], [0, 1])
    for bad_call in (lambda: stacked_histogram(good, 1, 1, bins=0), lambda: stacked_histogram(good, 1, 1, clip=256),
                     lambda: voxel_grid(good, 1, 1, 3, 10, 5), lambda: voxel_grid(good, 1, 1, 3, 10, None),
                     lambda: stacked_histogram(good, 0, 1), lambda: stacked_histogram(np.zeros(3), 1, 1)):
        with pytest.raises(FlexdetError):
            bad_call()


# ---- torch output and torch implementation ------------------------------------------------------------

def test_as_tensor_and_torch_implementation_match_numba():
    h, w = 30, 40
    ev = random_events(20_000, h, w, seed=5)
    cols = events_to_tensors(ev)
    hist = stacked_histogram(ev, h, w, 10, 1_000, 41_000, as_tensor=True)
    assert isinstance(hist, torch.Tensor) and hist.dtype == torch.uint8
    assert torch.equal(stacked_histogram_torch(**cols, height=h, width=w, bins=10, t_start=1_000, t_end=41_000), hist)
    assert torch.equal(stacked_histogram_torch(**cols, height=h, width=w, bins=6),
                       torch.from_numpy(stacked_histogram(ev, h, w, 6)))
    for span in ((1_000, 41_000), (None, None)):
        assert torch.equal(voxel_grid_torch(**cols, height=h, width=w, bins=5, t_start=span[0], t_end=span[1]),
                           voxel_grid(ev, h, w, 5, *span, as_tensor=True))
        surface = time_surface_torch(**cols, height=h, width=w, t_start=span[0], t_end=span[1])
        np.testing.assert_allclose(surface.numpy(), time_surface(ev, h, w, None, *span), rtol=1e-6, atol=1e-7)
    assert np.array_equal(event_frame_torch(**cols, height=h, width=w).numpy(), event_frame(ev, h, w))
    bad = dict(cols, x=cols["x"].clone())
    bad["x"][9] = w
    with pytest.raises(FlexdetError, match="event 9"):
        stacked_histogram_torch(**bad, height=h, width=w)


# ---- 2x integrate-and-fire downsampling ----------------------------------------------------------------

def dagr_reference(ev, factor):
    """DAGr's rule written out: a float change map per low-res cell steps by +-1/factor^2, fires at |.| >= 1."""
    change = {}
    keep = []
    for i, (x, y, p) in enumerate(zip(ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist())):
        cell = (y // factor, x // factor)
        sign = 1.0 if p else -1.0
        change[cell] = change.get(cell, np.float32(0)) + np.float32(sign / factor ** 2)
        if abs(change[cell]) >= 1:
            keep.append(i)
            change[cell] -= np.float32(sign)
    return np.array(keep, dtype=np.int64)


def test_downsample_matches_dagr_rule_and_hand_case():
    ev = random_events(20_000, 9, 11, seed=6, clustered=True)
    out = downsample_events(ev, 9, 11)
    keep = dagr_reference(ev, 2)
    assert np.array_equal(out["t"], ev["t"][keep]) and np.array_equal(out["p"], ev["p"][keep])
    assert np.array_equal(out["x"], ev["x"][keep] // 2) and out["y"].max() <= 4  # ceil(9 / 2) = 5 rows
    hand = make_events([1, 2, 3, 4, 5, 6], [0, 1, 0, 1, 2, 0], [0, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0])
    fired = downsample_events(hand, 2, 4)
    assert fired.tolist() == [(4, 0, 0, 1)]
    assert downsample_events(hand, 2, 4, mode="polarity", threshold=1)["t"].tolist() == [1, 2, 3, 4, 5, 6]


def test_downsample_state_carries_across_chunks():
    ev = random_events(10_000, 8, 8, seed=7)
    whole = downsample_events(ev, 8, 8, mode="polarity")
    state = np.zeros((2, 4, 4), np.int32)
    parts = [downsample_events(ev[a:b], 8, 8, mode="polarity", state=state) for a, b in ((0, 3_333), (3_333, 10_000))]
    assert np.array_equal(np.concatenate(parts), whole)
    with pytest.raises(FlexdetError):
        downsample_events(ev, 8, 8, state=np.zeros((2, 4, 4), np.int32))
