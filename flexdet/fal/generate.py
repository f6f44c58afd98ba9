"""Pseudo labels for the instants between labelled frames: stream a teacher over a sequence on a grid
`factor` times finer than the labels, forward and time-reversed, and keep what the tracker vouches for.

Forward, step i sees the events [g[i-1], g[i]) (and the latest frame at or before g[i-1]) and predicts at
g[i]. Reversed, the stream starts at the end: step i sees [g[i], g[i+1]) played backwards (reversed
histogram) with the earliest frame at or after g[i+1], and predicts at g[i]. Both run as one batch of two.
Predictions at the in-between instants are thresholded, merged (class-wise NMS) and tracked together
with the ground truth; the kept boxes go back to the label file's frame and class ids.

Output, `<seq>/object_detections/left/pseudo_tracks.npy` (Gen1 layout: `<name>_pseudo_bbox.npy`), written
atomically: the sequence's ground-truth rows unchanged (confidence as in tracks.npy, 1.0 in DSEC-Det) plus
the pseudo rows at in-between instants, whose class_confidence is the teacher's score. Pseudo rows are the
ones at instants that have no ground truth (`split_pseudo_labels`).

`config.rule` picks the step between the teacher and the file. "flexdet": the above, on `fine_grid` of the
labelled instants. "flextune": FlexEvent's own labels (flextune.py): the teacher runs on `flextune_grid` of the
frame times with FlexEvent's postprocess (score = class probability), `flextune_labels` builds FlexEvent's label
stream from both directions (model frame), and its rows at the in-between instants become the pseudo rows, moved
to the same instants of `fine_grid` (where the student steps) and back to the label file's frame and class ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.clock import fine_grid
from flexdet.data.input_spec import InputSpec
from flexdet.data.writers import write_boxes
from flexdet.datasets.benchmarks import Benchmark
from flexdet.datasets.ground_truth import label_times, labels_at
from flexdet.datasets.sequences import Dataset, Sequence, open_dataset
from flexdet.errors import ConfigError
from flexdet.evaluation.coco_eval import predictions_as_boxes
from flexdet.evaluation.model_data import model_spec, open_model_dataset
from flexdet.evaluation.stream import StreamRunner, StreamView
from flexdet.fal.config import FALConfig
from flexdet.fal.flextune import (
    FLEXTUNE_POSTPROCESS,
    flextune_config,
    flextune_grid,
    flextune_labels,
    student_pseudo_rows,
)
from flexdet.fal.pseudo_labels import apply_thresholds, merge_directions
from flexdet.fal.tracker import track_filter
from flexdet.models.checkpoint import load_model
from flexdet.progress import progress_bar

PSEUDO_LABELS_NAME = "pseudo_tracks.npy"


def base_times(sequence: Sequence) -> np.ndarray:
    """The labelled instants to refine: the frame times when every label sits on a frame and frames are not
    denser than labels (DSEC-Det: frames without objects have no label rows), else the label times."""
    labelled = label_times(sequence.labels) if len(sequence.labels) else np.zeros(0, np.int64)
    frames = sequence.frame_times
    if frames is not None and len(frames) >= 2 and np.all(np.isin(labelled, frames)):
        if len(labelled) < 2 or np.median(np.diff(frames)) >= 0.5 * np.median(np.diff(labelled)):
            return np.unique(np.asarray(frames, dtype=np.int64))
    return labelled


def teacher_predictions(model, sequence: Sequence, spec: InputSpec, grid: np.ndarray, reverse: bool = True,
                        device: str = "cpu", progress: Callable[[int], None] | None = None,
                        postprocess: Mapping[str, Any] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(forward, reversed) BOX_DTYPE predictions at every grid instant (input frame, model class ids, score
    in class_confidence); forward[i] is at grid[i] (forward[0] is empty: no window ends there), and
    reversed[i] at grid[i] (reversed[-1] is empty). Without `reverse` the reversed list is all empty. Both
    directions run through the stream driver as one batch of two streams, inputs from the model's specification:
    forward step k reads [grid[k], grid[k+1]) with the specification's frame; reversed step k reads [grid[m],
    grid[m+1]) time-reversed (m = steps-1-k) with the mirror of latest_at_start, the earliest frame at or after
    the reversed window's start (its end in real time). `postprocess`: model-config postprocess fields
    (postprocess_rule, conf_thresh, nms_thresh, max_detections) used instead of the model's own."""
    grid = np.asarray(grid, dtype=np.int64)
    steps = len(grid) - 1
    forward = [np.zeros(0, BOX_DTYPE) for _ in grid]
    backward = [np.zeros(0, BOX_DTYPE) for _ in grid]
    if steps < 1:
        return forward, backward
    views = [StreamView(sequence, grid[:-1], grid[1:])]
    if reverse:
        m = steps - 1 - np.arange(steps)
        frames = None
        if sequence.frame_times is not None and len(sequence.frame_times):
            after = np.searchsorted(sequence.frame_times, grid[m + 1], side="left")
            frames = np.minimum(after, len(sequence.frame_times) - 1)
        views.append(StreamView(sequence, grid[m], grid[m + 1], frames, backwards=True))
    runner = StreamRunner(model, spec, device=device, postprocess=postprocess)
    outputs = runner.run_views(views, progress=progress)
    for k, detection in enumerate(outputs[0]):
        forward[k + 1] = _rows(predictions_as_boxes(detection), grid[k + 1])
    if reverse:
        for k, detection in enumerate(outputs[1]):
            backward[steps - 1 - k] = _rows(predictions_as_boxes(detection), grid[steps - 1 - k])
    return forward, backward


def label_grid(sequence: Sequence, config: FALConfig) -> np.ndarray:
    """The instants the teacher predicts at under `config.rule`: flexdet's `fine_grid` of the labelled instants,
    or FlexTune's uniform `flextune_grid` of the frame times."""
    if config.rule == "flextune":
        return flextune_grid(_flextune_frames(sequence), config.factor)
    return fine_grid(base_times(sequence), config.factor)


def pseudo_label_sequence(model, sequence: Sequence, benchmark: Benchmark, config: FALConfig, spec: InputSpec,
                          device: str = "cpu", progress: Callable[[int], None] | None = None) -> np.ndarray:
    """BOX_DTYPE rows of the sequence's ground truth plus its kept pseudo boxes (label-file frame and ids);
    `config.rule` picks how teacher predictions become pseudo boxes (flexdet's chain or FlexTune's)."""
    flextune = config.rule == "flextune"
    grid = label_grid(sequence, config)
    forward, backward = teacher_predictions(model, sequence, spec, grid, config.both_directions, device, progress,
                                            FLEXTUNE_POSTPROCESS if flextune else None)
    step = _flextune_step if flextune else _flexdet_step
    pseudo = step(sequence, benchmark, config, spec, grid, forward, backward)
    merged = np.concatenate([sequence.labels.astype(BOX_DTYPE), pseudo.astype(BOX_DTYPE)])
    return merged[np.argsort(merged["t"], kind="stable")]


def _flexdet_step(sequence: Sequence, benchmark: Benchmark, config: FALConfig, spec: InputSpec, grid: np.ndarray,
                  forward: list[np.ndarray], backward: list[np.ndarray]) -> np.ndarray:
    """flexdet's rule: thresholds and class-wise NMS at each in-between instant, GT at the labelled ones, all
    through flexdet's tracker; the kept pseudo rows in the label file's frame and ids."""
    between = ~np.isin(grid, base_times(sequence))
    instants, is_gt = [], []
    for i, t in enumerate(grid.tolist()):
        if between[i]:
            candidates = [apply_thresholds(rows, config.confidence_threshold, config.class_thresholds)
                          for rows in (forward[i], backward[i])]
            instants.append(merge_directions(*candidates, config.nms_iou))
        else:
            instants.append(benchmark.to_eval_frame(benchmark.map_classes(labels_at(sequence.labels, t))))
        is_gt.append(not between[i])
    width, height = spec.size
    masks, ids = track_filter(instants, is_gt, config.tracker, width, height)
    pseudo = [_to_label_file(rows[keep], track[keep], benchmark)
              for rows, keep, track, gt in zip(instants, masks, ids, is_gt) if not gt]
    return np.concatenate(pseudo) if pseudo else np.zeros(0, BOX_DTYPE)


def _flextune_step(sequence: Sequence, benchmark: Benchmark, config: FALConfig, spec: InputSpec, grid: np.ndarray,
                   forward: list[np.ndarray], backward: list[np.ndarray]) -> np.ndarray:
    """FlexTune's rule: `flextune_labels` of both directions (model frame, FlexEvent's thresholds, per-class on its
    8-class benchmarks), its rows at the in-between instants moved to the student's grid, in the label file's
    frame and ids (the prediction's track id kept, as FlexEvent writes it)."""
    if tuple(spec.size) != tuple(benchmark.eval_size):
        raise ConfigError(f"fal.rule flextune: the teacher's input is {spec.size[0]}x{spec.size[1]} but benchmark "
                          f"{benchmark.name!r} scores {benchmark.eval_size[0]}x{benchmark.eval_size[1]} boxes; FlexTune's "
                          "labels live in the benchmark's frame")
    frames = _flextune_frames(sequence)
    base = base_times(sequence)
    if not np.array_equal(base, frames):
        raise ConfigError(f"{sequence.name}: fal.rule flextune needs every label on a frame time and increasing "
                          "frame times (DSEC-Det: tracks.npy stamped with images/timestamps.txt); the student "
                          "steps on the labelled instants, which here are not the frames")
    student_grid = fine_grid(base, config.factor)
    rows = flextune_labels(np.concatenate(forward), np.concatenate(backward), sequence.labels, frames,
                           flextune_config(config, benchmark), benchmark)
    pseudo = student_pseudo_rows(rows, grid, student_grid, config.factor)
    return _to_label_file(pseudo, pseudo["track_id"], benchmark)


def _flextune_frames(sequence: Sequence) -> np.ndarray:
    """The frame times FlexTune's grid spans (its build_pseudo_labels.py reads images/timestamps.txt)."""
    frames = sequence.frame_times
    if frames is None or len(frames) == 0:
        raise ConfigError(f"{sequence.name}: fal.rule flextune spans the frame times (DSEC-Det's "
                          "images/timestamps.txt) and this sequence has no frames; use fal.rule flexdet")
    return np.asarray(frames, dtype=np.int64)


def pseudo_label_path(sequence: Sequence) -> Path:
    """Where a sequence's pseudo labels live: beside its tracks.npy (DSEC) or its _bbox.npy (Gen1)."""
    path = Path(sequence.path)
    if path.is_dir():
        return path / "object_detections" / "left" / PSEUDO_LABELS_NAME
    if path.name.endswith("_td.dat"):
        return path.with_name(f"{path.name[:-len('_td.dat')]}_pseudo_bbox.npy")
    raise ConfigError(f"{path}: pseudo labels need a DSEC sequence folder or a Gen1 *_td.dat recording")


def split_pseudo_labels(boxes: np.ndarray, ground_truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ground-truth rows, pseudo rows) of a pseudo_tracks.npy: pseudo rows sit at instants the ground truth
    (the sequence's tracks.npy) has no row at."""
    pseudo = ~np.isin(boxes["t"], np.unique(ground_truth["t"]))
    return boxes[~pseudo], boxes[pseudo]


def pseudo_label_dataset(model, root: str | Path, split: str = "train", config: FALConfig | None = None,
                         layout: str = "auto", benchmark: str = "auto", downsample: int = 1, device: str = "cpu",
                         show_progress: bool = True, spec: InputSpec | None = None) -> list[Path]:
    """Pseudo-label every sequence of `split` under `root` and write each file; returns the written paths.
    `spec`: the teacher's input specification (default: the dataset's geometry, bins from the model)."""
    dataset = open_dataset(root, split, layout, benchmark, downsample)
    if model.config.num_classes != dataset.benchmark.num_classes:
        dataset.close()
        raise ConfigError(f"the teacher has {model.config.num_classes} classes but benchmark "
                          f"{dataset.benchmark.name!r} scores {dataset.benchmark.num_classes}")
    return _pseudo_label_opened(model, dataset, config or FALConfig(), spec, device, show_progress)


def pseudo_label_checkpoint(checkpoint: str | Path, root: str | Path, split: str = "train",
                            config: FALConfig | None = None, benchmark: str | None = None, device: str = "cpu",
                            show_progress: bool = True) -> list[Path]:
    """`pseudo_label_dataset` with a teacher from any flexdet checkpoint: its input specification, and the data
    opened the way it was trained (`open_model_dataset`); `benchmark` overrides the checkpoint's."""
    loaded = load_model(checkpoint)
    dataset = open_model_dataset(loaded, checkpoint, root, split, benchmark)
    return _pseudo_label_opened(loaded.model, dataset, config or FALConfig(), loaded.spec, device, show_progress)


def _pseudo_label_opened(model, dataset: Dataset, config: FALConfig, spec: InputSpec | None, device: str,
                         show_progress: bool) -> list[Path]:
    """Pseudo-label and write every sequence of an opened dataset (closed after)."""
    written = []
    kept = instants = gt_boxes = 0
    try:
        if dataset.layout == "rvt":
            raise ConfigError(f"{dataset.root}: RVT data stores fixed windows only; pseudo labels need the raw events")
        spec = model_spec(model, dataset, spec)
        for sequence in dataset.sequences:
            labelled = base_times(sequence)
            steps = max(len(label_grid(sequence, config)) - 1, 0)
            with progress_bar(total=steps, desc=f"pseudo-label {sequence.name}", unit="step", disable=not show_progress,
                              leave=False) as bar:
                boxes = pseudo_label_sequence(model, sequence, dataset.benchmark, config, spec, device, bar.update)
            path = pseudo_label_path(sequence)
            write_boxes(path, boxes)
            written.append(path)
            kept += len(boxes) - len(sequence.labels)  # the file holds the label rows too
            instants += max(steps + 1 - len(labelled), 0)
            gt_boxes += len(sequence.labels)
    finally:
        dataset.close()
    if show_progress:
        print(f"pseudo labels: {kept} boxes kept at {instants} in-between instants of {len(written)} sequences "
              f"(the label files hold {gt_boxes} boxes)")
    return written


def _rows(boxes: np.ndarray, t: int) -> np.ndarray:
    out = boxes.copy()
    out["t"] = int(t)
    return out


def _to_label_file(rows: np.ndarray, track_ids: np.ndarray, benchmark: Benchmark) -> np.ndarray:
    """Pseudo rows back to the label file: scale undone, class ids mapped back (an evaluated class that
    several file classes merge into takes the smallest, e.g. DSEC 2-class car -> car), tracker ids."""
    out = benchmark.to_label_frame(rows)
    out["class_id"] = benchmark.label_class_ids()[np.asarray(rows["class_id"], np.int64)]
    out["track_id"] = track_ids
    return out
