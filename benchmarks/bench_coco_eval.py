"""Time flexdet's evaluation core against a plain pycocotools run on the same boxes (ratio = flexdet / baseline).

    /work/venv/bin/python benchmarks/bench_coco_eval.py [--frames 2000] [--repeats 3]

Prints seconds per call and the ratio; also times the DAGr persistence filter and interpolation per frame.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

from flexdet.data.boxes import BOX_DTYPE
from flexdet.evaluation.coco_eval import coco_metrics
from flexdet.datasets.ground_truth import interframe_targets, persistent_pairs


def random_frames(n_frames: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """DSEC-like frames: 0-8 GT boxes at 320x215 and noisy predictions plus false positives."""
    rng = np.random.default_rng(seed)
    gt_frames, pred_frames = [], []
    for _ in range(n_frames):
        n = int(rng.integers(0, 9))
        gt = np.zeros(n, dtype=BOX_DTYPE)
        gt["x"], gt["y"] = rng.uniform(0, 280, n), rng.uniform(0, 180, n)
        gt["w"], gt["h"] = rng.uniform(10, 80, n), rng.uniform(10, 60, n)
        gt["class_id"] = rng.integers(0, 2, n)
        extra = int(rng.integers(0, 6))
        pred = np.concatenate([gt, np.zeros(extra, dtype=BOX_DTYPE)])
        pred["x"][n:], pred["y"][n:] = rng.uniform(0, 280, extra), rng.uniform(0, 180, extra)
        pred["w"][n:], pred["h"][n:] = rng.uniform(10, 80, extra), rng.uniform(10, 60, extra)
        pred["x"] += rng.normal(0, 3, len(pred)).astype(np.float32)
        pred["class_confidence"] = rng.random(len(pred))
        gt_frames.append(gt)
        pred_frames.append(pred)
    return gt_frames, pred_frames


def direct_pycocotools(gt_frames: list[np.ndarray], pred_frames: list[np.ndarray]) -> float:
    """The baseline: what a user writes by hand with pycocotools (list-of-dict results)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations, results = [], []
    for image_id, (gt, pred) in enumerate(zip(gt_frames, pred_frames), start=1):
        for box in gt:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "category_id": int(box["class_id"]) + 1, "area": float(box["w"] * box["h"]),
                                "bbox": [float(box["x"]), float(box["y"]), float(box["w"]), float(box["h"])]})
        for box in pred:
            results.append({"image_id": image_id, "category_id": int(box["class_id"]) + 1,
                            "score": float(box["class_confidence"]),
                            "bbox": [float(box["x"]), float(box["y"]), float(box["w"]), float(box["h"])]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i + 1} for i in range(len(gt_frames))], "annotations": annotations,
                        "categories": [{"id": 1}, {"id": 2}]}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def best_time(function, repeats: int) -> tuple[float, object]:
    """Fastest of `repeats` wall-clock runs (the CPU is shared) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def tracks(n_instants: int, seed: int = 1) -> np.ndarray:
    """20 Hz labels with 6 persistent tracks moving slowly (every pair persists)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n_instants * 6, dtype=BOX_DTYPE)
    out["t"] = np.repeat(np.arange(n_instants, dtype=np.int64) * 50_000, 6)
    out["track_id"] = np.tile(np.arange(1, 7), n_instants)
    out["x"] = np.tile(rng.uniform(0, 200, 6), n_instants) + np.repeat(np.arange(n_instants) * 0.5, 6)
    out["y"] = np.tile(rng.uniform(0, 150, 6), n_instants)
    out["w"], out["h"] = 30, 20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt_frames, pred_frames = random_frames(args.frames)
    n_boxes = sum(len(f) for f in gt_frames) + sum(len(f) for f in pred_frames)
    base_s, base_ap = best_time(lambda: direct_pycocotools(gt_frames, pred_frames), args.repeats)
    ours_s, ours = best_time(lambda: coco_metrics(gt_frames, pred_frames, 2, 215, 320), args.repeats)
    assert abs(ours["AP"] - base_ap) < 1e-9, (ours["AP"], base_ap)
    print(f"coco_metrics: {args.frames} frames, {n_boxes} boxes: flexdet {ours_s:.3f} s, direct pycocotools "
          f"{base_s:.3f} s, ratio {ours_s / base_s:.2f} (AP {ours['AP']:.4f} both)")
    labels = tracks(args.frames)
    pairs_s, pairs = best_time(lambda: persistent_pairs(labels), args.repeats)
    interp_s, _ = best_time(lambda: interframe_targets(labels, pairs, 27_777), args.repeats)
    print(f"persistent_pairs: {args.frames} instants in {pairs_s:.3f} s ({1e6 * pairs_s / args.frames:.0f} µs each); "
          f"interframe_targets: {1e6 * interp_s / max(len(pairs), 1):.0f} µs per pair; "
          f"coco_metrics {1e6 * ours_s / args.frames:.0f} µs per frame for scale")


if __name__ == "__main__":
    main()
