"""Benchmarks: size/time filters, class maps, clipping rules and DSEC's half-resolution transform on hand-made
boxes (the official metrics themselves are reproduced in test_score.py)."""

from __future__ import annotations

import numpy as np
import pytest

from flexdet.data.boxes import BOX_DTYPE
from flexdet.datasets.benchmarks import SizeFilter, get_benchmark
from flexdet.errors import ConfigError


def rows(entries: list[tuple]) -> np.ndarray:
    """BOX_DTYPE from (t, x, y, w, h, class_id) tuples."""
    out = np.zeros(len(entries), dtype=BOX_DTYPE)
    for i, (t, x, y, w, h, c) in enumerate(entries):
        out[i]["t"], out[i]["x"], out[i]["y"], out[i]["w"], out[i]["h"], out[i]["class_id"] = t, x, y, w, h, c
    out["track_id"] = np.arange(1, len(out) + 1)
    return out


def test_gen1_filter_on_ground_truth_and_predictions():
    gen1 = get_benchmark("gen1")
    boxes = rows([
        (600_000, 10, 10, 20, 20, 0),   # diagonal 28.3 < 30: dropped
        (600_000, 10, 10, 24, 18, 0),   # diagonal 30 exactly, sides >= 10: kept
        (600_000, 10, 10, 9, 40, 1),    # side 9 < 10: dropped
        (600_000, 10, 10, 10, 40, 1),   # side 10 exactly: kept
        (499_999, 10, 10, 50, 50, 0),   # before 0.5 s: dropped
        (500_000, 10, 10, 50, 50, 1),   # at 0.5 s: dropped (the toolbox keeps t > 0.5 s only)
        (500_001, 10, 10, 50, 50, 1),   # kept
    ])
    assert gen1.prepare_ground_truth(boxes)["track_id"].tolist() == [2, 4, 7]
    assert gen1.prepare_predictions(boxes)["track_id"].tolist() == [2, 4, 7]
    # The skip counts from the recording start (t = 0 for Prophesee recordings), not from the first label.
    shifted = boxes.copy()
    shifted["t"] += 2_000_000
    assert gen1.filter_boxes(shifted, recording_start_us=2_000_000)["track_id"].tolist() == [2, 4, 7]
    assert gen1.filter_boxes(shifted)["track_id"].tolist() == [2, 4, 5, 6, 7]
    assert gen1.eval_size == (304, 240) and gen1.class_names == ("car", "pedestrian")


def test_gen1_scores_boxes_past_the_edge_whole_but_trains_on_clipped_ones():
    # 290 + 30 runs past the 304-px edge: scored as it is (the Prophesee evaluator does not clip); the
    # training target is clipped to w = 14 (diagonal hypot(14, 40) = 42.4, kept).
    box = rows([(600_000, 290, 10, 30, 40, 0)])
    scored = get_benchmark("gen1").prepare_ground_truth(box)
    assert (float(scored["x"][0]), float(scored["w"][0])) == (290.0, 30.0)
    trained = get_benchmark("gen1").prepare_ground_truth(box, training=True)
    assert (float(trained["x"][0]), float(trained["w"][0])) == (290.0, 14.0)


def test_1mpx_downsampled_by_2_halves_boxes_and_thresholds():
    # RVT evaluates 1 Mpx at half resolution with diag 30 / side 10: the same boxes pass as at full size.
    half = get_benchmark("1mpx").downsampled(2)
    assert half.eval_size == (640, 360) and half.eval_filter.min_diag == 30 and half.eval_filter.min_side == 10
    boxes = rows([(1_000_000, 100, 100, 48, 36, 0), (1_000_000, 100, 100, 40, 40, 1)])
    kept = half.prepare_ground_truth(boxes)
    assert kept["track_id"].tolist() == [1] and float(kept["w"][0]) == 24.0


def test_1mpx_keeps_three_classes_and_larger_boxes():
    mpx = get_benchmark("1mpx")
    boxes = rows([(1_000_000, 100, 100, 48, 36, 0),   # diagonal 60 exactly: kept
                  (1_000_000, 100, 100, 40, 40, 1),   # diagonal 56.6: dropped
                  (1_000_000, 100, 100, 19, 80, 2),   # side 19: dropped
                  (1_000_000, 100, 100, 80, 80, 3),   # class 3 not evaluated
                  (1_000_000, 100, 100, 80, 80, 2)])
    kept = mpx.prepare_ground_truth(boxes)
    assert kept["track_id"].tolist() == [1, 5]
    assert kept["class_id"].tolist() == [0, 2]
    assert mpx.num_classes == 3 and mpx.eval_size == (1280, 720)


def test_dsec_two_class_mapping():
    dsec2 = get_benchmark("dsec2")
    boxes = rows([(0, 10, 10, 100, 100, c) for c in range(8)])  # pedestrian, rider, car, bus, truck, ...
    mapped = dsec2.map_classes(boxes)
    assert mapped["track_id"].tolist() == [1, 3, 4, 5]
    assert mapped["class_id"].tolist() == [1, 0, 0, 0]
    assert dsec2.class_names[0] == "car" and dsec2.class_names[1] == "pedestrian"
    # Predictions go back to the label file's ids: evaluated car 0 -> DSEC car 2, pedestrian 1 -> 0.
    assert dsec2.label_class_ids().tolist() == [2, 0]
    dsec8 = get_benchmark("dsec8")
    assert dsec8.map_classes(boxes)["class_id"].tolist() == list(range(8))
    assert dsec8.num_classes == 8 and dsec8.label_class_ids().tolist() == list(range(8))


def test_dsec_half_resolution_transform():
    dsec = get_benchmark("dsec8")
    assert dsec.eval_size == (320, 215)
    boxes = rows([(0, 100, 100, 60, 40, 2),    # inside: halved -> (50, 50, 30, 20)
                  (0, 600, 100, 80, 60, 2),    # right edge: x 300..340 clipped to 320 -> w 20
                  (0, 100, 420, 40, 40, 2),    # crosses row 430: y 210..215 -> h 5
                  (0, 10, 440, 20, 20, 2)])    # entirely below the crop: dropped
    half = dsec.to_eval_frame(boxes)
    got = np.stack([half[k] for k in ("x", "y", "w", "h")], axis=1).tolist()
    assert got == [[50, 50, 30, 20], [300, 50, 20, 30], [50, 210, 20, 5]]
    assert half["track_id"].tolist() == [1, 2, 3]
    back = dsec.to_label_frame(half[:1])
    assert [float(back[k][0]) for k in ("x", "y", "w", "h")] == [100, 100, 60, 40]
    # Scored ground truth is clipped as DAGr does, to the last pixel (319, 214): w 19, h 4; the 4-px-high
    # box and the one below the crop then fail the eval filter (sides > 10 at half resolution).
    scored = dsec.to_eval_frame(boxes, clip="last_pixel")
    assert scored["w"].tolist()[1] == 19 and scored["h"].tolist()[2:] == [4, 0]
    assert dsec.prepare_ground_truth(boxes)["track_id"].tolist() == [1, 2]
    assert dsec.prepare_ground_truth(boxes)["w"].tolist() == [30, 19]


def test_dsec_filters_are_strict_and_differ_for_training():
    dsec = get_benchmark("dsec2")
    half = rows([(0, 10, 10, 11, 11, 0),   # diag 15.6 > 15, sides > 10: eval yes, training no (diag <= 20)
                 (0, 10, 10, 10, 30, 0),   # side 10 is not > 10
                 (0, 10, 10, 15, 15, 1)])  # diag 21.2: both
    assert dsec.filter_boxes(half)["track_id"].tolist() == [1, 3]
    assert dsec.filter_boxes(half, training=True)["track_id"].tolist() == [3]


def test_size_filter_inclusive_vs_strict():
    box = rows([(0, 0, 0, 10, 10, 0)])
    assert SizeFilter(min_side=10).keep(box).tolist() == [True]
    assert SizeFilter(min_side=10, strict=True).keep(box).tolist() == [False]
    # Diagonal exactly 15 (9, 12): DAGr's strict filter drops it, Prophesee's inclusive one keeps it.
    edge = rows([(0, 0, 0, 9, 12, 0), (0, 0, 0, 9, 12.01, 0)])
    assert SizeFilter(min_diag=15, strict=True).keep(edge).tolist() == [False, True]
    assert SizeFilter(min_diag=15).keep(edge).tolist() == [True, True]


def test_synthetic_benchmark_and_registry_errors():
    synthetic = get_benchmark("synthetic", class_names=["car", "pedestrian", "cyclist"], width=320, height=240)
    boxes = rows([(0, 5, 5, 1.5, 30, 2), (0, 5, 5, 2, 2, 2), (0, 5, 5, 8, 8, 3)])
    assert synthetic.prepare_ground_truth(boxes)["track_id"].tolist() == [2]  # class 3 is not a dataset class
    assert synthetic.eval_size == (320, 240)
    with pytest.raises(ConfigError, match="unknown benchmark"):
        get_benchmark("coco")
    with pytest.raises(ConfigError, match="class names"):
        get_benchmark("synthetic", class_names=[], width=320, height=240)
    with pytest.raises(ConfigError, match="synthetic"):
        get_benchmark("synthetic")
