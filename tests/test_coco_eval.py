"""COCO metrics: hand-computed 101-point interpolated AP cases and agreement with a direct pycocotools run."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from flexdet.data.boxes import BOX_DTYPE
from flexdet.errors import FlexdetError
from flexdet.evaluation.coco_eval import coco_metrics

HEIGHT, WIDTH = 240, 304


def boxes(rows: list[tuple]) -> np.ndarray:
    """BOX_DTYPE rows from (x, y, w, h, class_id[, score])."""
    out = np.zeros(len(rows), dtype=BOX_DTYPE)
    for i, row in enumerate(rows):
        out[i]["x"], out[i]["y"], out[i]["w"], out[i]["h"], out[i]["class_id"] = row[:5]
        out[i]["class_confidence"] = row[5] if len(row) > 5 else 1.0
    return out


def interpolated_ap(precision_envelope_by_recall: list[tuple[float, float]]) -> float:
    """101-point AP from a hand-written step envelope [(recall_upper_bound, precision), ...] ascending."""
    total = 0.0
    for k in range(101):
        recall = k / 100
        total += next((p for bound, p in precision_envelope_by_recall if recall <= bound + 1e-12), 0.0)
    return total / 101


def test_perfect_predictions_score_one():
    gt = boxes([(10, 10, 50, 50, 0), (100, 60, 60, 40, 1), (200, 100, 20, 20, 0)])
    pred = gt.copy()
    pred["class_confidence"] = [0.9, 0.8, 0.7]
    metrics = coco_metrics([gt, gt[:0]], [pred, pred[:0]], 2, HEIGHT, WIDTH)
    for name in ("AP", "AP50", "AP75", "APs", "APm"):
        assert metrics[name] == pytest.approx(1.0)
    assert math.isnan(metrics["APl"])  # no ground-truth box is large


def test_no_predictions_score_zero_and_no_ground_truth_is_nan():
    gt = boxes([(10, 10, 50, 50, 0)])
    assert coco_metrics([gt], [gt[:0]], 1, HEIGHT, WIDTH)["AP"] == 0.0
    nothing = coco_metrics([gt[:0]], [boxes([(10, 10, 50, 50, 0, 0.9)])], 1, HEIGHT, WIDTH)
    assert all(math.isnan(value) for value in nothing.values())


def test_hand_computed_tp_at_iou_0625_and_fp():
    # GT1 (0,0,50,50) and GT2 (100,100,50,50), all medium. Predictions by score:
    # P1 (0,0,50,31.25) IoU 1562.5/2500 = 0.625 with GT1 -> TP at IoU thresholds .50/.55/.60 only;
    # P2 far away -> FP; P3 == GT2 -> TP at every threshold.
    gt = boxes([(0, 0, 50, 50, 0), (100, 100, 50, 50, 0)])
    pred = boxes([(0, 0, 50, 31.25, 0, 0.9), (200, 10, 40, 40, 0, 0.8), (100, 100, 50, 50, 0, 0.7)])
    # Low thresholds: TP, FP, TP -> (R, P) = (.5, 1), (.5, .5), (1, 2/3); envelope 1 up to R=.5, 2/3 above.
    ap_low = interpolated_ap([(0.5, 1.0), (1.0, 2 / 3)])
    # High thresholds: FP, FP, TP -> (R, P) = (0, 0), (0, 0), (.5, 1/3); envelope 1/3 up to R=.5, 0 above.
    ap_high = interpolated_ap([(0.5, 1 / 3)])
    assert ap_low == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert ap_high == pytest.approx(17 / 101)
    metrics = coco_metrics([gt], [pred], 1, HEIGHT, WIDTH)
    assert metrics["AP50"] == pytest.approx(ap_low)
    assert metrics["AP75"] == pytest.approx(ap_high)
    assert metrics["AP"] == pytest.approx((3 * ap_low + 7 * ap_high) / 10)
    assert metrics["APm"] == pytest.approx(metrics["AP"])
    assert math.isnan(metrics["APs"]) and math.isnan(metrics["APl"])


def test_score_ordering_matters():
    gt = boxes([(0, 0, 50, 50, 0)])
    tp_first = boxes([(0, 0, 50, 50, 0, 0.9), (200, 10, 40, 40, 0, 0.8)])
    fp_first = boxes([(0, 0, 50, 50, 0, 0.8), (200, 10, 40, 40, 0, 0.9)])
    assert coco_metrics([gt], [tp_first], 1, HEIGHT, WIDTH)["AP"] == pytest.approx(1.0)
    # FP then TP: (R, P) = (0, 0), (1, .5) -> envelope .5 everywhere.
    assert coco_metrics([gt], [fp_first], 1, HEIGHT, WIDTH)["AP"] == pytest.approx(0.5)


def test_two_classes_average_per_class():
    # Class 0 found perfectly; class 1's only box is predicted with label 0 (an FP for class 0 ranked
    # below its TP, so class 0 keeps AP 1) and class 1 gets nothing: mean AP (1 + 0) / 2.
    gt = boxes([(10, 10, 50, 50, 0), (150, 60, 50, 50, 1)])
    pred = boxes([(10, 10, 50, 50, 0, 0.9), (150, 60, 50, 50, 0, 0.8)])
    metrics = coco_metrics([gt], [pred], 2, HEIGHT, WIDTH)
    assert metrics["AP"] == pytest.approx(0.5)
    assert metrics["AP50"] == pytest.approx(0.5)
    assert coco_metrics([gt], [pred], [0], HEIGHT, WIDTH)["AP"] == pytest.approx(1.0)
    per_class = coco_metrics([gt], [pred], 3, HEIGHT, WIDTH, per_class=True)
    assert per_class["AP[0]"] == pytest.approx(1.0) and per_class["AP[1]"] == 0.0
    assert math.isnan(per_class["AP[2]"])  # no ground truth of class 2


def test_image_with_ground_truth_but_no_predictions_caps_recall():
    first, second = boxes([(10, 10, 50, 50, 0)]), boxes([(100, 100, 50, 50, 0)])
    metrics = coco_metrics([first, second], [first, second[:0]], 1, HEIGHT, WIDTH)
    assert metrics["AP"] == pytest.approx(interpolated_ap([(0.5, 1.0)]))  # 51 / 101


def test_false_positive_in_an_empty_frame_counts():
    gt = boxes([(10, 10, 50, 50, 0)])
    fp = boxes([(100, 100, 50, 50, 0, 0.95)])
    metrics = coco_metrics([gt, gt[:0]], [boxes([(10, 10, 50, 50, 0, 0.9)]), fp], 1, HEIGHT, WIDTH)
    assert metrics["AP"] == pytest.approx(0.5)


def test_torch_dict_predictions_equal_box_rows():
    gt = boxes([(10, 10, 50, 50, 0), (100, 60, 60, 40, 1)])
    pred_rows = boxes([(12, 9, 47, 52, 0, 0.9), (98, 64, 60, 36, 1, 0.6), (200, 100, 30, 30, 1, 0.7)])
    as_dict = {"boxes": torch.tensor([[12, 9, 59, 61], [98, 64, 158, 100], [200, 100, 230, 130]],
                                     dtype=torch.float32),
               "scores": torch.tensor([0.9, 0.6, 0.7]), "labels": torch.tensor([0, 1, 1])}
    assert coco_metrics([gt], [as_dict], 2, HEIGHT, WIDTH) == coco_metrics([gt], [pred_rows], 2, HEIGHT, WIDTH)


def test_mismatched_frame_counts_raise():
    gt = boxes([(10, 10, 50, 50, 0)])
    with pytest.raises(FlexdetError, match="frames"):
        coco_metrics([gt, gt], [gt], 1, HEIGHT, WIDTH)
    with pytest.raises(FlexdetError, match="scores"):
        coco_metrics([gt], [{"boxes": np.zeros((1, 4)), "labels": np.zeros(1)}], 1, HEIGHT, WIDTH)


def test_agrees_with_direct_pycocotools_on_random_boxes():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(7)
    gt_frames, pred_frames = [], []
    images, annotations, results = [], [], []
    for image_id in range(1, 21):
        n_gt = int(rng.integers(0, 6))
        gt = np.zeros(n_gt, dtype=BOX_DTYPE)
        gt["x"], gt["y"] = rng.uniform(0, 250, n_gt), rng.uniform(0, 190, n_gt)
        gt["w"], gt["h"] = rng.uniform(5, 120, n_gt), rng.uniform(5, 100, n_gt)
        gt["class_id"] = rng.integers(0, 3, n_gt)
        pred = np.concatenate([gt, gt])[: n_gt + int(rng.integers(0, n_gt + 1))].copy()
        n_pred = len(pred)
        for name in ("x", "y", "w", "h"):
            pred[name] += rng.normal(0, 6, n_pred).astype(np.float32)
        pred["w"], pred["h"] = np.abs(pred["w"]) + 1, np.abs(pred["h"]) + 1
        pred["class_id"] = np.where(rng.random(n_pred) < 0.2, rng.integers(0, 3, n_pred), pred["class_id"])
        pred["class_confidence"] = rng.random(n_pred)
        gt_frames.append(gt)
        pred_frames.append(pred)
        images.append({"id": image_id})
        for box in gt:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "category_id": int(box["class_id"]) + 1, "area": float(box["w"] * box["h"]),
                                "bbox": [float(box[k]) for k in ("x", "y", "w", "h")]})
        for box in pred:
            results.append({"image_id": image_id, "category_id": int(box["class_id"]) + 1,
                            "score": float(box["class_confidence"]),
                            "bbox": [float(box[k]) for k in ("x", "y", "w", "h")]})
    with contextlib.redirect_stdout(io.StringIO()):
        reference_gt = COCO()
        reference_gt.dataset = {"images": images, "annotations": annotations,
                                "categories": [{"id": c} for c in (1, 2, 3)]}
        reference_gt.createIndex()
        evaluator = COCOeval(reference_gt, reference_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    expected = evaluator.stats[:6]
    assert 0.1 < expected[0] < 0.95  # a non-trivial case
    metrics = coco_metrics(gt_frames, pred_frames, 3, HEIGHT, WIDTH)
    for name, value in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), expected):
        if value < 0:
            assert math.isnan(metrics[name])
        else:
            assert metrics[name] == pytest.approx(value, abs=1e-6)


def test_verbose_prints_summary(capsys):
    gt = boxes([(10, 10, 50, 50, 0)])
    coco_metrics([gt], [gt], 1, HEIGHT, WIDTH)
    assert capsys.readouterr().out == ""
    coco_metrics([gt], [gt], 1, HEIGHT, WIDTH, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_garbage_inputs_raise_clear_errors():
    gt = boxes([(10, 10, 50, 50, 0)])
    with pytest.raises(FlexdetError, match="ground-truth frame 0"):
        coco_metrics([np.zeros((1, 4))], [gt], 1, HEIGHT, WIDTH)
    with pytest.raises(FlexdetError, match="finite"):
        coco_metrics([gt], [{"boxes": [[0, 0, np.nan, 5]], "scores": [0.5], "labels": [0]}], 1, HEIGHT, WIDTH)
    with pytest.raises(FlexdetError, match="class ids"):
        coco_metrics([gt], [{"boxes": [[0, 0, 5, 5]], "scores": [0.5], "labels": [-1]}], 1, HEIGHT, WIDTH)


def test_prophesee_dtype_predictions_keep_their_scores():
    # The Prophesee/RVT box dtype has track_id BEFORE class_confidence; read by position the track ids
    # (here anti-correlated with the scores) would rank the predictions.
    from flexdet.evaluation.coco_eval import predictions_as_boxes
    from flexdet.evaluation.results import PROPHESEE_BOX_DTYPE

    gt = boxes([(0, 0, 50, 50, 0)])
    pred = np.zeros(2, PROPHESEE_BOX_DTYPE)
    pred["x"], pred["y"], pred["w"], pred["h"] = [0, 200], [0, 10], [50, 40], [50, 40]
    pred["class_confidence"], pred["track_id"] = [0.9, 0.1], [1, 90]
    converted = predictions_as_boxes(pred)
    assert converted["class_confidence"].tolist() == pytest.approx([0.9, 0.1])
    assert converted["track_id"].tolist() == [1, 90]
    assert coco_metrics([gt], [pred], 1, HEIGHT, WIDTH)["AP"] == pytest.approx(1.0)  # TP ranked first
    gen1 = np.zeros(1, [("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                        ("class_id", "u1"), ("confidence", "<f4"), ("track_id", "<u4")])
    gen1["w"], gen1["h"], gen1["confidence"], gen1["track_id"] = 50, 50, 0.5, 7
    assert predictions_as_boxes(gen1)["class_confidence"].tolist() == [0.5]


def test_match_instants_pools_or_takes_the_nearest_set():
    from flexdet.evaluation.coco_eval import match_instants

    gt = boxes([(0, 0, 50, 50, 0), (0, 0, 50, 50, 0)])
    gt["t"] = [100_000, 150_000]
    pred = boxes([(0, 0, 50, 50, 0, 0.9)] * 4)
    pred["t"] = [50_000, 101_500, 149_000, 200_001]
    gt_frames, pooled = match_instants(gt, pred, 50_000, pooled=True)
    assert [len(f) for f in gt_frames] == [1, 1]
    assert [f["t"].tolist() for f in pooled] == [[50_000, 101_500, 149_000], [101_500, 149_000]]
    _, nearest = match_instants(gt, pred, 50_000, pooled=False)
    assert [f["t"].tolist() for f in nearest] == [[101_500], [149_000]]
