"""Ground truth at any time: exact lookup, interpolation by track, DAGr persistence, dense labels, step times."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.clock import step_ends
from flexdet.datasets.ground_truth import (
    dense_labels_at,
    format_rate,
    interframe_deltas,
    interframe_targets,
    interpolate_labels,
    interpolate_pair,
    label_times,
    labels_at,
    persistent_pairs,
)
from flexdet.errors import ConfigError, FlexdetError


def rows(entries: list[tuple]) -> np.ndarray:
    """BOX_DTYPE from (t, track_id, x, y, w, h[, class_id]) tuples, sorted by t as label files are."""
    out = np.zeros(len(entries), dtype=BOX_DTYPE)
    for i, (t, track, x, y, w, h, *rest) in enumerate(entries):
        out[i]["t"], out[i]["track_id"] = t, track
        out[i]["x"], out[i]["y"], out[i]["w"], out[i]["h"] = x, y, w, h
        out[i]["class_id"] = rest[0] if rest else 0
    return out[np.argsort(out["t"], kind="stable")]


def linear_track(track: int, t: int, x0: float, vx: float, y0: float, vy: float, w0: float, vw: float) -> tuple:
    """A box moving linearly: position/size at `t` µs, velocities per 10 ms from 1 s on."""
    s = (t - 1_000_000) / 10_000
    return (t, track, x0 + vx * s, y0 + vy * s, w0 + vw * s, 20.0, 1)


def test_labels_at_is_exact():
    labels = rows([(0, 1, 0, 0, 10, 10), (0, 2, 5, 5, 10, 10), (50_000, 1, 1, 1, 10, 10)])
    assert list(label_times(labels)) == [0, 50_000]
    assert list(labels_at(labels, 0)["track_id"]) == [1, 2]
    assert list(labels_at(labels, 50_000)["track_id"]) == [1]
    assert len(labels_at(labels, 25_000)) == 0
    assert len(labels_at(labels, 50_001)) == 0


def test_linear_motion_interpolates_exactly_and_vanishing_tracks_drop():
    # Track 1 and 3 move linearly over both instants; track 2 exists only at t0, track 4 only at t1.
    t0, t1 = 1_000_000, 1_050_000
    labels = rows([linear_track(1, t0, 10, 4, 30, -2, 20, 1), linear_track(3, t0, 200, -6, 50, 1, 40, -2),
                   (t0, 2, 100, 100, 10, 10, 0),
                   linear_track(1, t1, 10, 4, 30, -2, 20, 1), linear_track(3, t1, 200, -6, 50, 1, 40, -2),
                   (t1, 4, 5, 5, 10, 10, 0)])
    for t in (t0 + 5_555, t0 + 27_777, t0 + 44_444):
        got = interpolate_labels(labels, t)
        assert list(got["track_id"]) == [1, 3]
        assert np.all(got["t"] == t)
        for track, params in ((1, (10, 4, 30, -2, 20, 1)), (3, (200, -6, 50, 1, 40, -2))):
            expected = linear_track(track, t, *params)
            box = got[got["track_id"] == track][0]
            np.testing.assert_allclose([box["x"], box["y"], box["w"], box["h"]], expected[2:6], rtol=0, atol=1e-4)
            assert box["class_id"] == 1
    # At a labelled instant every label is the answer; outside the labelled span there is nothing.
    assert sorted(interpolate_labels(labels, t0)["track_id"]) == [1, 2, 3]
    assert len(interpolate_labels(labels, t0 - 1)) == 0
    assert len(interpolate_labels(labels, t1 + 1)) == 0


def test_interpolate_pair_rejects_reversed_instants():
    a = rows([(50_000, 1, 0, 0, 10, 10)])
    b = rows([(0, 1, 0, 0, 10, 10)])
    with pytest.raises(FlexdetError, match="not after"):
        interpolate_pair(a, b, 10_000)


def test_unsorted_labels_are_refused():
    labels = rows([(0, 1, 0, 0, 10, 10), (50_000, 1, 1, 1, 10, 10)])[::-1]
    with pytest.raises(FlexdetError, match="sorted"):
        labels_at(labels, 0)


def test_persistence_rule_drops_low_iou_and_changing_track_sets():
    # 0 -> 50 ms: track 1 shifts 8 px (IoU 20/180 = 0.111, kept).
    # 50 -> 100 ms: shifts 9 px (IoU 10/190 = 0.053 < 0.1, dropped).
    # 100 -> 150 ms: track 2 appears (set changes, dropped). 150 -> 200 ms: same set, still, kept.
    # 200 ms -> 300 ms: a gap in labels; kept unless frame times say they are not consecutive frames.
    labels = rows([(0, 1, 0, 0, 10, 10), (50_000, 1, 8, 0, 10, 10), (100_000, 1, 17, 0, 10, 10),
                   (150_000, 1, 17, 0, 10, 10), (150_000, 2, 50, 50, 10, 10),
                   (200_000, 1, 17, 0, 10, 10), (200_000, 2, 50, 50, 10, 10),
                   (300_000, 2, 50, 50, 10, 10), (300_000, 1, 17, 0, 10, 10)])
    pairs = persistent_pairs(labels)
    assert pairs.tolist() == [[0, 50_000], [150_000, 200_000], [200_000, 300_000]]
    frames = np.arange(0, 350_000, 50_000)
    assert persistent_pairs(labels, frame_times=frames).tolist() == [[0, 50_000], [150_000, 200_000]]
    assert persistent_pairs(labels, min_iou=0.05).tolist()[:2] == [[0, 50_000], [50_000, 100_000]]
    assert persistent_pairs(labels[:0]).shape == (0, 2)


def test_interframe_targets_interpolate_inside_each_pair():
    labels = rows([(0, 1, 0, 0, 10, 10), (50_000, 1, 5, 0, 10, 10)])
    targets = interframe_targets(labels, persistent_pairs(labels), 10_000)
    assert len(targets) == 1 and targets[0]["t"][0] == 10_000
    assert targets[0]["x"][0] == pytest.approx(1.0)


def test_dense_labels_use_the_grid_instant_at_or_before():
    # A synthetic dataset: one box per ms while the object exists (moving 1 px per ms), gone at 5 ms.
    labels = rows([(ms * 1000, 7, 10 + ms, 20, 8, 8) for ms in range(5)])
    assert dense_labels_at(labels, 2_500)["x"][0] == 12
    assert dense_labels_at(labels, 3_000)["x"][0] == 13
    assert dense_labels_at(labels, 2_500, interpolate=True)["x"][0] == pytest.approx(12.5)
    assert len(dense_labels_at(labels, 5_200)) == 0  # no rows at 5 ms: the object is gone
    assert len(dense_labels_at(labels, 4_500, interpolate=True)) == 0  # vanishes before the next instant
    with pytest.raises(ConfigError):
        dense_labels_at(labels, 0, step_us=0)


def test_interframe_deltas_match_dagr():
    deltas = interframe_deltas()
    assert [d.delta_us for d in deltas] == [int(k * 50_000 / 9) for k in range(10)]
    assert [d.name for d in deltas] == ["empty", "180", "90", "60", "45", "36", "30", "25.7", "22.5", "20"]
    assert deltas[0].rate_hz is None and deltas[-1].rate_hz == 20.0


def test_format_rate():
    assert [format_rate(r) for r in (20.0, 25.7, 1000, 22.5, 0.5, None)] == ["20", "25.7", "1000", "22.5",
                                                                              "0.5", "empty"]


def test_stream_steps_land_on_20hz_labels_after_10000_steps():
    t0 = 1_234_567
    label_instants = t0 + 50_000 * np.arange(1, 10_001, dtype=np.int64)
    steps = step_ends(t0, int(label_instants[-1]), 20)
    assert steps.dtype == np.int64
    np.testing.assert_array_equal(steps, label_instants)
    np.testing.assert_array_equal(step_ends(t0, int(label_instants[-1]), "20"), label_instants)


@pytest.mark.parametrize("rate", [180, 25.7, "22.5", Fraction(1000, 7)])
def test_stream_steps_are_exact_rounded_multiples(rate):
    exact = Fraction(str(rate)) if isinstance(rate, float) else Fraction(rate)
    t0, t1 = 10_000, 10_000 + 3_600_000_000  # one hour
    steps = step_ends(t0, t1, rate)
    period = Fraction(1_000_000) / exact
    expected_count = int((t1 - t0) / period + Fraction(1, 2))  # last k with round(k * period) <= t1 - t0
    while t0 + int(expected_count * period + Fraction(1, 2)) > t1:
        expected_count -= 1
    assert len(steps) == expected_count
    for k in (1, 2, 3, 1000, expected_count // 2, expected_count):
        assert steps[k - 1] == t0 + int(k * period + Fraction(1, 2))  # round half up, exact
    assert np.all(np.diff(steps) > 0) and steps[-1] <= t1


def test_stream_steps_big_integer_path_agrees():
    rate = Fraction(10**9 + 7, 10**7)  # ~100 Hz with a large denominator: exceeds int64 intermediates
    t0, t1 = 0, 3_000_000_000
    steps = step_ends(t0, t1, rate)
    period = Fraction(1_000_000) / rate
    for k in (1, 77_777, len(steps)):
        assert steps[k - 1] == int(k * period + Fraction(1, 2))
    assert t0 + int((len(steps) + 1) * period + Fraction(1, 2)) > t1


def test_stream_steps_reject_bad_rates_and_handle_empty_spans():
    for bad in (0, -20, "fast", float("nan")):
        with pytest.raises(ConfigError):
            step_ends(0, 1_000_000, bad)
    assert len(step_ends(5, 5, 20)) == 0
    assert len(step_ends(0, 49_999, 20)) == 0


def test_interframe_targets_refuse_pairs_from_other_labels():
    labels = rows([(0, 1, 0, 0, 10, 10), (50_000, 1, 5, 0, 10, 10)])
    with pytest.raises(FlexdetError, match="labelled instant"):
        interframe_targets(labels, np.array([[0, 60_000]]), 10_000)
