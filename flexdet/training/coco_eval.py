"""COCO detection metrics (AP, AP50, AP75, APs/m/l) with pycocotools, built in memory, one image per frame.

Each "frame" is one labelled (or scored) timestamp: its ground truth is a BOX_DTYPE array and its
predictions are either BOX_DTYPE rows (score = `class_confidence`) or a torchvision-style dict with
`boxes` (N, 4) xyxy, `scores` (N,) and `labels` (N,) as numpy arrays or torch tensors. Area ranges are
pycocotools' COCO-size ones (small < 32^2 < medium < 96^2 px^2), the convention RVT and DAGr report with.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flexdet.data.boxes import BOX_DTYPE
from flexdet.errors import FlexdetError

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")

Frame = np.ndarray | Mapping[str, Any]


def coco_metrics(gt_frames: Sequence[np.ndarray], pred_frames: Sequence[Frame],
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
    if len(gt_frames) != len(pred_frames):
        raise FlexdetError(f"coco_metrics: {len(gt_frames)} ground-truth frames but {len(pred_frames)} "
                           f"prediction frames; each frame needs both (empty arrays where there is nothing)")
    class_ids = list(range(classes)) if isinstance(classes, int) else [int(c) for c in classes]
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sink: contextlib.AbstractContextManager = contextlib.nullcontext() if verbose \
        else contextlib.redirect_stdout(io.StringIO())
    with sink:
        gt_coco = COCO()
        gt_coco.dataset = _ground_truth_dataset(gt_frames, class_ids, height, width)
        gt_coco.createIndex()
        results = _results(pred_frames, class_ids)
        if len(results):
            dt_coco = gt_coco.loadRes(results)
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


def predictions_as_boxes(prediction: Frame) -> np.ndarray:
    """BOX_DTYPE rows (score in `class_confidence`) from BOX_DTYPE rows or a boxes/scores/labels dict."""
    if isinstance(prediction, np.ndarray):
        _check_box_rows(prediction, "predictions")
        return prediction.astype(BOX_DTYPE) if prediction.dtype != BOX_DTYPE else prediction
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


def _ground_truth_dataset(gt_frames: Sequence[np.ndarray], class_ids: list[int], height: int,
                          width: int) -> dict[str, list]:
    """The COCO dataset dict: image, annotation and category ids start at 1 (pycocotools treats id 0 as
    unmatched); category id = class id + 1."""
    images = [{"id": i + 1, "height": int(height), "width": int(width)} for i in range(len(gt_frames))]
    categories = [{"id": c + 1, "name": str(c), "supercategory": "none"} for c in class_ids]
    annotations: list[dict] = []
    wanted = np.asarray(class_ids)
    for image_index, frame in enumerate(gt_frames):
        _check_box_rows(frame, f"ground-truth frame {image_index}")
        frame = frame[np.isin(frame["class_id"], wanted)]
        for x, y, w, h, class_id in zip(*(frame[k].tolist() for k in ("x", "y", "w", "h", "class_id"))):
            annotations.append({"id": len(annotations) + 1, "image_id": image_index + 1, "iscrowd": 0,
                                "category_id": class_id + 1, "bbox": [x, y, w, h], "area": w * h})
    return {"images": images, "categories": categories, "annotations": annotations}


def _results(pred_frames: Sequence[Frame], class_ids: list[int]) -> list[dict]:
    """pycocotools' result list (image id, xywh box, score, category id), plain Python numbers."""
    results = []
    wanted = np.asarray(class_ids)
    for image_index, prediction in enumerate(pred_frames):
        boxes = predictions_as_boxes(prediction)
        boxes = boxes[np.isin(boxes["class_id"], wanted)]
        columns = (boxes[k].tolist() for k in ("x", "y", "w", "h", "class_confidence", "class_id"))
        for x, y, w, h, score, class_id in zip(*columns):
            results.append({"image_id": image_index + 1, "bbox": [x, y, w, h], "score": score,
                            "category_id": class_id + 1})
    return results


def _check_box_rows(rows: Any, what: str) -> None:
    """Refuse anything that is not an array of box rows with the fields COCO needs."""
    needed = {"x", "y", "w", "h", "class_id", "class_confidence"}
    names = getattr(getattr(rows, "dtype", None), "names", None)
    if not isinstance(rows, np.ndarray) or names is None or not needed <= set(names):
        kind = getattr(rows, "dtype", type(rows).__name__)
        raise FlexdetError(f"{what} must be box rows with fields {sorted(needed)} (BOX_DTYPE) or, for "
                           f"predictions, a dict of boxes/scores/labels; got {kind}")


def _as_numpy(value: Any) -> np.ndarray:
    """A numpy copy of a numpy array, list or torch tensor (any device)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _metric(value: float) -> float:
    """pycocotools writes -1 where no ground truth exists; report that as nan."""
    value = float(value)
    return math.nan if value < 0 else value
