"""COCO detection metrics (AP, AP50, AP75, APs/m/l) with pycocotools, built in memory, one image per frame.

Each "frame" is one labelled (or scored) timestamp: its ground truth is an array of box rows and its
predictions are either box rows (score = `class_confidence`) or a torchvision-style dict with `boxes`
(N, 4) xyxy, `scores` (N,) and `labels` (N,) as numpy arrays or torch tensors. Box rows may have any
structured dtype with the fields by name (BOX_DTYPE, the Prophesee toolbox's, Gen1's `ts`/`confidence`).
Area ranges are pycocotools' COCO-size ones (small < 32^2 < medium < 96^2 px^2), the convention RVT and
DAGr report with; boxes and areas are float32 products as in the Prophesee evaluator. `match_instants` and
`nearest_instants` cut time-stamped rows into frames by the official matching rules.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.labels import normalise_boxes, source_names
from flexdet.errors import FlexdetError

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# COCOeval's largest maxDets: it scores only each image's best 100 detections of each class.
MAX_DETECTIONS = 100

PredictionRows = np.ndarray | Mapping[str, Any]  # one image's predictions: box rows or {boxes, scores, labels}


def coco_metrics(gt_frames: Sequence[np.ndarray], pred_frames: Sequence[PredictionRows],
                 classes: int | Sequence[int], height: int, width: int,
                 verbose: bool = False, per_class: bool = False) -> dict[str, float]:
    """COCO box metrics over `len(gt_frames)` images; frame i's predictions are `pred_frames[i]`.

    `classes` is the number of classes (ids 0..n-1) or the list of evaluated class ids; ground truth and
    predictions of other classes are ignored. Frames with neither ground truth nor predictions still
    count as images. Returns floats in [0, 1]; a metric is nan where pycocotools has no ground truth
    to score it with (pycocotools' -1): every metric when there is no ground truth at all, APs when no
    ground-truth box is small. pycocotools' prints are suppressed unless `verbose`. With `per_class`,
    "AP[<class id>]" entries give each class's AP@[.5:.95] as well.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    class_ids = list(range(classes)) if isinstance(classes, int) else [int(c) for c in classes]
    best = [best_detections(predictions_as_boxes(frame)) for frame in pred_frames]
    dataset, results = coco_dataset(gt_frames, best, class_ids, height, width)
    sink: contextlib.AbstractContextManager = contextlib.nullcontext() if verbose \
        else contextlib.redirect_stdout(io.StringIO())
    with sink:
        gt_coco = COCO()
        gt_coco.dataset = dataset
        gt_coco.createIndex()
        if len(results):
            dt_coco = gt_coco.loadRes(results)
            # loadRes recomputes each area in float64; the Prophesee evaluator's boxes are float32, so its
            # areas are float32 products: keep ours, so boxes on an area-range bound fall the same way.
            for annotation, result in zip(dt_coco.dataset["annotations"], results):
                annotation["area"] = result["area"]
        else:
            dt_coco = COCO()
            dt_coco.dataset = {"images": gt_coco.dataset["images"], "categories": gt_coco.dataset["categories"],
                               "annotations": []}
            dt_coco.createIndex()
        evaluator = COCOeval(gt_coco, dt_coco, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: _metric(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6])}
    if per_class:
        # precision[iou, recall, class, area range, max dets]: area "all", 100 detections, as summarize().
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        for index, class_id in enumerate(class_ids):
            scored = precision[:, :, index][precision[:, :, index] > -1]
            metrics[f"AP[{class_id}]"] = float(scored.mean()) if scored.size else math.nan
    return metrics


def coco_dataset(gt_frames: Sequence[np.ndarray], pred_frames: Sequence[PredictionRows], class_ids: Sequence[int],
                 height: int, width: int) -> tuple[dict[str, list], list[dict]]:
    """The COCO ground-truth dataset and result list of the frames (frame i = image i + 1; category id =
    class id + 1), as pycocotools or any COCO tool reads them; classes not in `class_ids` are left out."""
    if len(gt_frames) != len(pred_frames):
        raise FlexdetError(f"coco_metrics: {len(gt_frames)} ground-truth frames but {len(pred_frames)} "
                           f"prediction frames; each frame needs both (empty arrays where there is nothing)")
    class_ids = [int(c) for c in class_ids]
    return (_ground_truth_dataset(gt_frames, class_ids, height, width), _results(pred_frames, class_ids))


def match_instants(gt: np.ndarray, predictions: np.ndarray, time_tol_us: int,
                   pooled: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One frame per distinct ground-truth time t: the rows at exactly t, and the predictions with
    t - tol <= t_pred <= t + tol (`pooled`, the Prophesee toolbox's rule) or only the prediction time
    nearest to t within the tolerance (one prediction set per instant, RVT's validation)."""
    gt = _sorted_rows(gt, "ground truth")
    predictions = _sorted_rows(predictions, "predictions")
    instants = np.unique(gt["t"])
    lo, hi = np.searchsorted(gt["t"], instants, "left"), np.searchsorted(gt["t"], instants, "right")
    gt_frames = [gt[a:b] for a, b in zip(lo, hi)]
    if not pooled:
        return gt_frames, nearest_instants(instants, predictions, time_tol_us)
    lo = np.searchsorted(predictions["t"], instants - int(time_tol_us), "left")
    hi = np.searchsorted(predictions["t"], instants + int(time_tol_us), "right")
    return gt_frames, [predictions[a:b] for a, b in zip(lo, hi)]


def nearest_instants(instants: np.ndarray, predictions: np.ndarray, time_tol_us: int) -> list[np.ndarray]:
    """The prediction set of each labelled instant: a prediction time belongs to the instant nearest to it
    within `time_tol_us`, and each instant takes the nearest of the times that belong to it (earlier on
    ties); empty where none does. Predictions stamped with their label time (RVT) fall exactly in place."""
    predictions = _sorted_rows(predictions, "predictions")
    instants = np.asarray(instants, np.int64)
    times = np.unique(predictions["t"])
    chosen: dict[int, int] = {}
    if len(instants):
        right = np.clip(np.searchsorted(instants, times), 1, len(instants) - 1) if len(instants) > 1 \
            else np.zeros(len(times), np.int64)
        left = np.maximum(right - 1, 0)
        nearest = np.where(np.abs(times - instants[left]) <= np.abs(instants[right] - times), left, right)
        for time, j in zip(times.tolist(), nearest.tolist()):
            gap = abs(time - int(instants[j]))
            if gap <= time_tol_us and (j not in chosen or gap < abs(chosen[j] - int(instants[j]))):
                chosen[j] = time
    out = []
    for j in range(len(instants)):
        if j not in chosen:
            out.append(predictions[:0])
            continue
        lo, hi = np.searchsorted(predictions["t"], chosen[j], "left"), np.searchsorted(predictions["t"], chosen[j], "right")
        out.append(predictions[lo:hi])
    return out


def predictions_as_boxes(prediction: PredictionRows) -> np.ndarray:
    """BOX_DTYPE rows (score in `class_confidence`) from box rows of any dtype, converted field by field
    by name (never by position), or from a boxes/scores/labels dict."""
    if isinstance(prediction, np.ndarray):
        _check_box_rows(prediction, "predictions")
        return as_box_rows(prediction, "predictions")
    try:
        xyxy = _as_numpy(prediction["boxes"]).reshape(-1, 4).astype(np.float64)
        scores = _as_numpy(prediction["scores"]).reshape(-1)
        labels = _as_numpy(prediction["labels"]).reshape(-1)
    except KeyError as missing:
        raise FlexdetError(f"a prediction dict needs 'boxes' (xyxy), 'scores' and 'labels'; "
                           f"{missing} is missing") from None
    if not len(xyxy) == len(scores) == len(labels):
        raise FlexdetError(f"prediction dict has {len(xyxy)} boxes, {len(scores)} scores and "
                           f"{len(labels)} labels; they must match")
    if not (np.all(np.isfinite(xyxy)) and np.all(np.isfinite(scores.astype(np.float64)))):
        raise FlexdetError("prediction boxes and scores must be finite numbers (found nan or inf)")
    if len(labels) and (labels.min() < 0 or labels.max() > 255 or np.any(labels != np.round(labels))):
        raise FlexdetError(f"prediction labels must be class ids 0-255, got values {labels.min()}..{labels.max()}")
    out = np.zeros(len(xyxy), dtype=BOX_DTYPE)
    out["x"], out["y"] = xyxy[:, 0], xyxy[:, 1]
    out["w"], out["h"] = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    out["class_id"] = labels
    out["class_confidence"] = scores
    return out


def best_detections(boxes: np.ndarray, keep: int = MAX_DETECTIONS) -> np.ndarray:
    """The rows COCOeval can score: each class's `keep` highest scores (ties by row order, as its stable sort
    breaks them), in their original order; the rest never count, so dropping them first bounds memory."""
    if len(boxes) <= keep:
        return boxes
    classes = np.asarray(boxes["class_id"], np.int64)
    order = np.lexsort((-np.asarray(boxes["class_confidence"], np.float64), classes))
    sorted_classes = classes[order]
    rank = np.arange(len(order)) - np.searchsorted(sorted_classes, sorted_classes, "left")
    return boxes[np.sort(order[rank < keep])]


def as_box_rows(rows: np.ndarray, what: str) -> np.ndarray:
    """BOX_DTYPE rows from any box dtype, field by field by name (Gen1's `ts` / `confidence` too)."""
    return rows if rows.dtype == BOX_DTYPE else normalise_boxes(what, rows.reshape(-1))


def _sorted_rows(rows: np.ndarray, what: str) -> np.ndarray:
    """Box rows as BOX_DTYPE sorted by time (stable)."""
    _check_box_rows(rows, what)
    rows = as_box_rows(rows, what)
    return rows[np.argsort(rows["t"], kind="stable")]


def _ground_truth_dataset(gt_frames: Sequence[np.ndarray], class_ids: list[int], height: int,
                          width: int) -> dict[str, list]:
    """The COCO dataset dict: image, annotation and category ids start at 1 (pycocotools treats id 0 as
    unmatched); category id = class id + 1; area = w * h in float32."""
    images = [{"id": i + 1, "height": int(height), "width": int(width)} for i in range(len(gt_frames))]
    categories = [{"id": c + 1, "name": str(c), "supercategory": "none"} for c in class_ids]
    annotations: list[dict] = []
    wanted = np.asarray(class_ids)
    for image_index, frame in enumerate(gt_frames):
        _check_box_rows(frame, f"ground-truth frame {image_index}")
        frame = as_box_rows(frame, f"ground-truth frame {image_index}")
        frame = frame[np.isin(frame["class_id"], wanted)]
        area = (np.asarray(frame["w"], np.float32) * np.asarray(frame["h"], np.float32)).tolist()
        columns = (np.asarray(frame[k], np.float32).tolist() for k in ("x", "y", "w", "h"))
        for x, y, w, h, class_id, size in zip(*columns, frame["class_id"].tolist(), area):
            annotations.append({"id": len(annotations) + 1, "image_id": image_index + 1, "iscrowd": 0,
                                "category_id": class_id + 1, "bbox": [x, y, w, h], "area": size})
    return {"images": images, "categories": categories, "annotations": annotations}


def _results(pred_frames: Sequence[PredictionRows], class_ids: list[int]) -> list[dict]:
    """pycocotools' result list (image id, xywh box, score, category id, float32 area w * h), plain
    Python numbers."""
    results = []
    wanted = np.asarray(class_ids)
    for image_index, prediction in enumerate(pred_frames):
        boxes = predictions_as_boxes(prediction)
        boxes = boxes[np.isin(boxes["class_id"], wanted)]
        area = (np.asarray(boxes["w"], np.float32) * np.asarray(boxes["h"], np.float32)).tolist()
        columns = (boxes[k].tolist() for k in ("x", "y", "w", "h", "class_confidence", "class_id"))
        for x, y, w, h, score, class_id, size in zip(*columns, area):
            results.append({"image_id": image_index + 1, "bbox": [x, y, w, h], "score": score,
                            "category_id": class_id + 1, "area": size})
    return results


def _check_box_rows(rows: Any, what: str) -> None:
    """Refuse anything that is not an array of box rows with the fields COCO needs (a score for predictions)."""
    needed = {"x", "y", "w", "h", "class_id"}
    names = set(getattr(getattr(rows, "dtype", None), "names", None) or ())
    scored = what.startswith("predictions") and not set(source_names("class_confidence")) & names
    if not isinstance(rows, np.ndarray) or not needed <= names or scored:
        kind = getattr(rows, "dtype", type(rows).__name__)
        raise FlexdetError(f"{what} must be box rows with fields {sorted(needed)} (+ class_confidence for "
                           f"predictions; BOX_DTYPE or any dtype naming them) or, for predictions, a dict of "
                           f"boxes/scores/labels; got {kind}")


def _as_numpy(value: Any) -> np.ndarray:
    """A numpy copy of a numpy array, list or torch tensor (any device)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _metric(value: float) -> float:
    """pycocotools writes -1 where no ground truth exists; report that as nan."""
    value = float(value)
    return math.nan if value < 0 else value
