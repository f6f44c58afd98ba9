"""Score label-file rows under a benchmark's official rules: prepare both sides (classes, frame, filters), match
predictions to labelled instants by the benchmark's time rule and compute COCO AP (what `flexdet score` runs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flexdet.datasets.benchmarks import GRANULARITIES, Benchmark
from flexdet.errors import ConfigError, FlexdetError
from flexdet.evaluation.coco_eval import coco_metrics, match_instants, nearest_instants
from flexdet.evaluation.results import write_coco_json


def score_elements(benchmark: Benchmark, ground_truth: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                   granularity: str | None = None, coco_dir: str | Path | None = None) -> dict[str, float]:
    """COCO metrics of list elements of scored rows (eval frame and ids, both already filtered), matched in
    time by the benchmark's rule: element i's instants are the distinct times of `ground_truth[i]`.

    RVT's validation feeds one element per labelled instant; the toolbox feeds one per sequence. With
    `coco_dir`, the scored images are written there as COCO json too. Besides the metrics, "images" and
    "ground_truth_boxes" count what was scored.
    """
    if len(ground_truth) != len(predictions):
        raise FlexdetError(f"{len(ground_truth)} ground-truth elements but {len(predictions)} prediction elements")
    pooled = (granularity or benchmark.granularity) == "sequence"
    width, height = benchmark.eval_size
    gt_frames: list[np.ndarray] = []
    pred_frames: list[np.ndarray] = []
    if benchmark.score_empty_instants and not pooled:  # one image per element, with or without ground truth
        gt_frames, pred_frames = list(ground_truth), list(predictions)
    else:
        for gt, dt in zip(ground_truth, predictions):
            frames = match_instants(gt, dt, benchmark.time_tol_us, pooled)
            gt_frames.extend(frames[0])
            pred_frames.extend(frames[1])
    if coco_dir is not None:
        write_coco_json(coco_dir, gt_frames, pred_frames, benchmark.class_names, height, width)
    metrics = coco_metrics(gt_frames, pred_frames, benchmark.num_classes, height, width)
    metrics.update(images=len(gt_frames), ground_truth_boxes=sum(len(frame) for frame in gt_frames))
    return metrics


def score_sequences(benchmark: Benchmark, labels: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                    granularity: str | None = None, recording_starts: Sequence[int] | None = None,
                    coco_dir: str | Path | None = None) -> dict[str, float]:
    """COCO metrics of per-sequence prediction arrays against per-sequence label-file arrays, both in the
    label files' frame and class ids (what `flexdet eval` writes), under the benchmark's official rules.

    `granularity` overrides the benchmark's: "instant" scores each labelled instant on its own (RVT's
    reported numbers), "sequence" pools predictions within the tolerance over whole files (the toolbox).
    """
    granularity = granularity or benchmark.granularity
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if len(labels) != len(predictions):
        raise FlexdetError(f"{len(labels)} label arrays but {len(predictions)} prediction arrays")
    starts = [0] * len(labels) if recording_starts is None else [int(s) for s in recording_starts]
    gt_elements, dt_elements = [], []
    for rows, predicted, start in zip(labels, predictions, starts):
        gt = benchmark.prepare_ground_truth(rows, start)
        dt = benchmark.prepare_predictions(predicted, start)
        if granularity == "sequence":
            gt_elements.append(gt)
            dt_elements.append(dt)
            continue
        instants = np.unique(np.asarray(rows["t"], np.int64))
        for instant, dt_rows in zip(instants, nearest_instants(instants, dt, benchmark.time_tol_us)):
            gt_elements.append(gt[gt["t"] == instant])
            dt_elements.append(dt_rows)
    return score_elements(benchmark, gt_elements, dt_elements, granularity, coco_dir)

