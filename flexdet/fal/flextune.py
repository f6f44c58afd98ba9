"""FlexTune pseudo labels as FlexEvent builds them (its scripts/build_pseudo_labels.py with utils/pseudo_labels.py),
row for row: the label stream FlexEvent's student trains on, from the same teacher predictions.

Chain (`flextune_labels`): per direction keep class ids < num_classes scoring strictly above their threshold, clip
to the last pixel, keep trainable boxes (`trainable`: finite, w > 10, h > 10, diagonal > 20); merge forward +
reverse with class-wise NMS per instant (`nms_merge`); then walk the grid `factor` x denser than the frames
(uniform from first to last frame time, truncated to µs) and feed a GT-aware linear tracker (`LinearTracker`): at
each grid instant the GT rows of the nearest label time within 8 ms, then the pseudo rows stamped exactly at that
instant (clipped again), or an empty step if neither. A pseudo row survives when its track holds GT, spans
>= min_hits tracker steps or is alive at the end. Last, every row (GT too) must lie within 1 ms of a grid instant,
be trainable and have a class < num_classes; rows sort by time, ties by x, y, w, h, class, score, track id (what
NumPy's `argsort(order='t')` does with the other fields).

Differs from flexdet's own pipeline (generate.py, tracker.py) on purpose, to match FlexEvent: the grid is not
snapped to the label times, rows stay in the model frame (320x215, model class ids), and the tracker follows LEOD's
rules (see `LinearTracker`).

`flexdet pseudo-label --rule flextune` (generate.py `pseudo_label_sequence` with fal.rule "flextune") runs the
teacher on `flextune_grid` with FlexEvent's postprocess (`FLEXTUNE_POSTPROCESS`: the score is the class
probability, what its generate_pseudo_labels.py stores as class_confidence and build_pseudo_labels.py thresholds),
feeds both directions to `flextune_labels` and keeps the rows FlexEvent's student reads as pseudo labels
(`student_pseudo_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from flexdet.data.boxes import BOX_DTYPE, boxes_to_xyxy
from flexdet.datasets.benchmarks import DSEC_CLASSES, DSEC_TRAIN_FILTER, Benchmark, dsec_two_class_benchmark
from flexdet.fal.config import FALConfig, TrackerConfig
from flexdet.fal.pseudo_labels import apply_thresholds

GT_REACH_US = 8000
ON_GRID_US = 1000
# The teacher's postprocess when FlexEvent generates pseudo labels (generate_pseudo_labels.py:114-119 with
# config/model/rnndet.yaml:103-105): rows with objectness x class probability >= 0.1, class-wise NMS 0.45 on that
# product, no cap; utils/pseudo_labels.py:40-42 stores the class probability alone as class_confidence (and
# objectness x class probability as detection_confidence), and build_pseudo_labels.py thresholds class_confidence.
# flexdet's "rvt" postprocess rule is this rule (models/postprocess.py), reported score = class probability.
FLEXTUNE_POSTPROCESS = {"postprocess_rule": "rvt", "conf_thresh": 0.1, "nms_thresh": 0.45, "max_detections": 0}
# scripts/build_pseudo_labels.py:25-28, FlexEvent's --classwise thresholds for its 8-class model (README: "add
# `--classwise` to the label-construction command" for the multi-class model), by class name.
CLASSWISE_THRESHOLDS = {"pedestrian": 0.70, "rider": 0.75, "car": 0.75, "bus": 0.75, "truck": 0.70, "bicycle": 0.75,
                        "motorcycle": 0.70}


def flextune_grid(frame_times: np.ndarray, factor: int = 2) -> np.ndarray:
    """FlexEvent's label grid: factor * (n - 1) + 1 instants spaced evenly from the first to the last frame time,
    truncated to integer µs (not snapped to the frame times, so jittered frames sit off the grid)."""
    times = np.asarray(frame_times, dtype=np.int64)
    return np.linspace(times[0], times[-1], int(factor) * (len(times) - 1) + 1).astype(np.int64)


def select_predictions(boxes: np.ndarray, num_classes: int, threshold: float,
                       class_thresholds: Mapping[int, float] | None = None) -> np.ndarray:
    """Rows of a class the model scores that pass their confidence threshold (strictly, in float32)."""
    return apply_thresholds(boxes[boxes["class_id"] < num_classes], threshold, class_thresholds)


def clip_last_pixel(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes clipped to [0, width - 1] x [0, height - 1] in float32 (corners clipped, size recomputed)."""
    out = boxes.copy()
    x0, y0 = np.clip(boxes["x"], 0, width - 1), np.clip(boxes["y"], 0, height - 1)
    x1 = np.clip(boxes["x"] + boxes["w"], 0, width - 1)
    y1 = np.clip(boxes["y"] + boxes["h"], 0, height - 1)
    out["x"], out["y"], out["w"], out["h"] = x0, y0, x1 - x0, y1 - y0
    return out


def trainable(boxes: np.ndarray) -> np.ndarray:
    """Mask of finite boxes passing FlexEvent's training size filter (w > 10, h > 10, diagonal > 20)."""
    finite = np.all([np.isfinite(boxes[name]) for name in ("x", "y", "w", "h")], axis=0)
    return finite & DSEC_TRAIN_FILTER.keep(boxes)


def nms_merge(forward: np.ndarray, reverse: np.ndarray, nms_iou: float) -> np.ndarray:
    """Union of both directions with torchvision NMS run separately per (instant, class) in float32, as FlexEvent
    does (one call per group keeps batched_nms's coordinate offsets, hence its float32 rounding, identical)."""
    import torch
    from torchvision.ops import batched_nms

    merged = np.concatenate([forward, reverse]).astype(BOX_DTYPE)
    keep = np.zeros(len(merged), dtype=bool)
    for instant in np.unique(merged["t"]):
        at_instant = merged["t"] == instant
        for class_id in np.unique(merged["class_id"][at_instant]):
            members = np.flatnonzero(at_instant & (merged["class_id"] == class_id))
            rows = merged[members]
            kept = batched_nms(torch.from_numpy(boxes_to_xyxy(rows)),
                               torch.from_numpy(rows["class_confidence"].copy()),
                               torch.from_numpy(rows["class_id"].astype(np.int64)), float(nms_iou))
            keep[members[kept.numpy()]] = True
    return _time_sorted(merged[keep])


@dataclass
class LinearTrack:
    """One tracklet in LEOD's linear tracker. `box` is the unclamped state (cx, cy, w, h) in the precision of the
    box that last set it; `clamped` says which sides (top, bottom, left, right) the last prediction clamped."""

    box: np.ndarray
    class_id: float
    is_gt: bool
    confidence: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    previous: np.ndarray | None = None
    clamped: tuple[bool, bool, bool, bool] = (False, False, False, False)
    age: int = 0
    hits: int = 1
    done: bool = False


class LinearTracker:
    """LEOD's LinearTracker (Wuziyi616/LEOD modules/tracking/linear.py; FlexEvent's copy defaults to min_conf 0.53
    and IoU 0.6, TrackerConfig's defaults) written from its rules, which differ from flexdet's BoxTracker (tracker.py) in ways that change which rows survive:

    - `hits` is the step count from a track's first box to its last matched one (LEOD's age + 1), not the number
      of matched boxes;
    - predictions are clamped to [0, W-1] x [0, H-1] through centre-size round trips, and the velocity after a
      clamped prediction comes from the box edge opposite the clamp;
    - a track whose box has zero area ends (done) at the next step, before predicting;
    - IoU is computed from centre-size boxes; tracks claim boxes greedily in `np.argsort(-confidence)` order
      (NumPy's default sort), and a step matches nothing when the IoU matrix's max is not > 0 (also NaN);
    - arithmetic keeps each box's precision: FlexEvent feeds GT rows as float32 and pseudo rows as float64.
    """

    def __init__(self, config: TrackerConfig, width: int, height: int) -> None:
        self.config = config
        self.width, self.height = width, height
        self.tracks: list[LinearTrack] = []
        self.live: list[int] = []
        self.owners: list[int] = []

    def step(self, dets: np.ndarray, is_gt: bool) -> None:
        """One tracker step with (N, 5) boxes cx, cy, w, h, class; records the track of every box in `owners`."""
        if len(dets) == 0 and not self.live:
            return
        self._end([k for k in self.live if self.tracks[k].box[2] * self.tracks[k].box[3] <= 0.0])
        live = [self.tracks[k] for k in self.live]
        predicted = [self._predict(track) for track in live]
        order = np.argsort([-track.confidence for track in live])
        pairs = self._associate(predicted, order, dets)
        owners = np.full(len(dets), -1, dtype=np.int64)
        for i, j in pairs:
            self._update(live[i], dets[j], is_gt)
            owners[j] = self.live[i]
        matched = {i for i, _ in pairs}
        for i, track in enumerate(live):
            if i not in matched:
                track.confidence *= self.config.decay
        for j in np.flatnonzero(owners < 0):
            self.tracks.append(LinearTrack(dets[j, :4].copy(), dets[j, 4], is_gt, self.config.decay))
            self.live.append(len(self.tracks) - 1)
            owners[j] = len(self.tracks) - 1
        self._end([k for k in self.live if self.tracks[k].confidence < self.config.min_confidence])
        self.owners.extend(owners.tolist())

    def trusted(self) -> np.ndarray:
        """Per fed box (in feeding order): does its track hold GT, span >= min_hits steps or live on at the end?"""
        keep = [t.is_gt or t.hits >= self.config.min_hits or not t.done for t in self.tracks]
        return np.asarray(keep, dtype=bool)[np.asarray(self.owners, dtype=np.int64)]

    def _end(self, ended: list[int]) -> None:
        """Mark these tracks done and drop them from the live ones."""
        for k in ended:
            self.tracks[k].done = True
        self.live = [k for k in self.live if k not in ended]

    def _predict(self, track: LinearTrack) -> np.ndarray:
        """Move the state by the velocity and return the clamped prediction (cx, cy, w, h, class)."""
        track.age += 1
        track.previous = track.box.copy()
        track.box[:2] += track.velocity
        x0, y0, x1, y1 = _corners(track.box)
        cx0, cx1 = np.clip(x0, 0.0, self.width - 1.0), np.clip(x1, 0.0, self.width - 1.0)
        cy0, cy1 = np.clip(y0, 0.0, self.height - 1.0), np.clip(y1, 0.0, self.height - 1.0)
        track.clamped = (cy0 != y0, cy1 != y1, cx0 != x0, cx1 != x1)
        out = np.zeros(5, dtype=track.box.dtype)
        out[:4] = np.array([(cx0 + cx1) / 2.0, (cy0 + cy1) / 2.0, cx1 - cx0, cy1 - cy0])
        out[4] = track.class_id
        return out

    def _associate(self, predicted: list[np.ndarray], order: np.ndarray, dets: np.ndarray) -> list[tuple[int, int]]:
        """Greedy IoU matching, most confident track first, each box claimed once, IoU >= match_iou."""
        if not predicted or len(dets) == 0:
            return []
        iou = _iou_centre_size(np.stack(predicted), dets)
        if not iou.max() > 0:
            return []
        pairs = []
        for i in order:
            if iou[i].max() < self.config.match_iou:
                continue
            j = int(np.argmax(iou[i]))
            iou[:, j] = -np.inf
            pairs.append((int(i), j))
        return pairs

    def _update(self, track: LinearTrack, det: np.ndarray, is_gt: bool) -> None:
        """A matched box: hits = age + 1, clamp-aware velocity, new state, confidence (w c + 1) / (w + 1) with
        w = q + q^2 + ... + q^age in LEOD's closed form (the same float rounding)."""
        track.hits = track.age + 1
        velocity = det[:2] - track.previous[:2]
        if any(track.clamped):
            old, new = _corners(track.previous), _corners(det[:4])
            top, bottom, left, right = track.clamped
            if top:
                velocity[1] = new[3] - old[3]
            if bottom:
                velocity[1] = new[1] - old[1]
            if left:
                velocity[0] = new[2] - old[2]
            if right:
                velocity[0] = new[0] - old[0]
        track.velocity = velocity
        track.box = det[:4].copy()
        track.is_gt = track.is_gt or is_gt
        q = self.config.decay
        weight = q * (1.0 - q ** track.age) / (1.0 - q)
        track.confidence = (weight * track.confidence + 1.0) / (weight + 1.0)


def track_filter(grid: np.ndarray, gt: np.ndarray, pseudo: np.ndarray, config: TrackerConfig, width: int,
                 height: int) -> np.ndarray:
    """GT rows (nearest label time within 8 ms of each grid instant) and the pseudo rows the tracker trusts, in
    feeding order. Pseudo rows are used only at their exact grid instant. The tracker sees GT boxes in float32
    and pseudo boxes in float64, as in FlexEvent, where stacking float32 coordinates with the class column keeps
    float32 for DSEC's uint8 GT class ids and promotes to float64 for the uint32 ids of its pseudo rows."""
    tracker = LinearTracker(config, width, height)
    gt_times = gt["t"].astype(np.int64)
    pseudo_times = pseudo["t"].astype(np.int64)
    fed, is_pseudo = [], []
    for instant in np.asarray(grid, dtype=np.int64):
        near = None
        if len(gt_times):
            nearest = gt_times[np.argmin(np.abs(gt_times - instant))]
            near = nearest if abs(nearest - instant) <= GT_REACH_US else None
        if near is not None:
            rows = gt[gt_times == near]
            tracker.step(_tracker_boxes(rows, np.float32), is_gt=True)
            fed.append(rows)
            is_pseudo.append(np.zeros(len(rows), dtype=bool))
        if instant in pseudo_times:
            rows = clip_last_pixel(pseudo[pseudo_times == instant], width, height)
            tracker.step(_tracker_boxes(rows, np.float64), is_gt=False)
            fed.append(rows)
            is_pseudo.append(np.ones(len(rows), dtype=bool))
        elif near is None:
            tracker.step(np.zeros((0, 5)), is_gt=False)
    if not fed:
        return np.zeros(0, dtype=BOX_DTYPE)
    rows = np.concatenate([r.astype(BOX_DTYPE) for r in fed])
    return rows[~np.concatenate(is_pseudo) | tracker.trusted()]


def label_stream(grid: np.ndarray, gt: np.ndarray, pseudo: np.ndarray, num_classes: int, config: TrackerConfig,
                 width: int, height: int) -> np.ndarray:
    """`track_filter`'s rows within 1 ms of a grid instant, trainable, of a scored class, sorted by time."""
    rows = track_filter(grid, gt, pseudo, config, width, height)
    grid = np.asarray(grid, dtype=np.int64)
    index = np.searchsorted(grid, rows["t"])
    before = grid[np.clip(index - 1, 0, len(grid) - 1)]
    after = grid[np.clip(index, 0, len(grid) - 1)]
    on_grid = np.minimum(np.abs(rows["t"] - before), np.abs(rows["t"] - after)) <= ON_GRID_US
    return _time_sorted(rows[on_grid & trainable(rows) & (rows["class_id"] < num_classes)])


def flextune_labels(forward: np.ndarray, reverse: np.ndarray, ground_truth: np.ndarray, frame_times: np.ndarray,
                    config: FALConfig | None = None, benchmark: Benchmark | None = None) -> np.ndarray:
    """FlexTune's label stream for one sequence: BOX_DTYPE rows in the model frame (benchmark.eval_size, evaluated
    class ids): GT rows and kept pseudo rows (score in class_confidence, the prediction's track id).

    `forward` / `reverse`: teacher predictions (BOX_DTYPE, model frame, stamped with grid instants); `ground_truth`:
    the label file's rows (sensor frame, file class ids; mapped, scaled and clipped by `benchmark`, default dsec2);
    `frame_times`: the sequence's frame times. Uses config.confidence_threshold / class_thresholds, nms_iou, factor
    and tracker; without config.both_directions the reverse predictions are ignored."""
    config = config or FALConfig()
    benchmark = benchmark or dsec_two_class_benchmark()
    width, height = benchmark.eval_size
    candidates = []
    for boxes in (forward, reverse if config.both_directions else reverse[:0]):
        boxes = select_predictions(boxes.astype(BOX_DTYPE), benchmark.num_classes, config.confidence_threshold,
                                   config.class_thresholds)
        boxes = clip_last_pixel(boxes, width, height)
        candidates.append(boxes[trainable(boxes)])
    pseudo = nms_merge(*candidates, config.nms_iou)
    gt = benchmark.to_eval_frame(benchmark.map_classes(ground_truth.astype(BOX_DTYPE)), clip="last_pixel")
    return label_stream(flextune_grid(frame_times, config.factor), gt, pseudo, benchmark.num_classes,
                        config.tracker, width, height)


def flextune_config(config: FALConfig, benchmark: Benchmark) -> FALConfig:
    """`config` as FlexEvent builds labels for `benchmark`: on its 8-class DSEC benchmarks (flexevent8, dsec8) and
    without class_thresholds of its own, FlexEvent's --classwise thresholds (train, which FlexEvent does not
    score, keeps confidence_threshold); otherwise `config` unchanged."""
    import dataclasses

    names = tuple(benchmark.class_names)
    if config.class_thresholds or names[:7] != DSEC_CLASSES[:7]:
        return config
    return dataclasses.replace(config, class_thresholds={i: CLASSWISE_THRESHOLDS[name] for i, name in enumerate(names)
                                                         if name in CLASSWISE_THRESHOLDS})


def student_pseudo_rows(rows: np.ndarray, grid: np.ndarray, student_grid: np.ndarray, factor: int) -> np.ndarray:
    """The rows of `flextune_labels` that FlexEvent's student learns from as pseudo labels: those at the grid's
    in-between instants (indices not a multiple of `factor`; data/dsec_utils/training.py:25-32 and 139-149 take
    ground truth from the label file at the frame instants, pseudo labels only at the midpoints), each moved to
    the instant of the same index of `student_grid` (the grid flexdet's student steps on, the same length: equal
    to `grid` for evenly spaced frames, off by the frames' jitter otherwise)."""
    grid = np.asarray(grid, dtype=np.int64)
    student_grid = np.asarray(student_grid, dtype=np.int64)
    if len(grid) != len(student_grid):
        raise ValueError(f"the student's grid has {len(student_grid)} instants, FlexTune's {len(grid)}")
    if len(grid) < 2:
        return rows[:0].copy()
    at = np.minimum(np.searchsorted(grid, rows["t"]), len(grid) - 1)
    between = (grid[at] == rows["t"]) & (at % int(factor) != 0)
    out = rows[between].copy()
    out["t"] = student_grid[at[between]]
    return out


def _time_sorted(rows: np.ndarray) -> np.ndarray:
    """Stable sort by time, ties by the other fields in dtype order (x, y, w, h, class, score, track id)."""
    return rows[np.argsort(rows, order="t", kind="stable")]


def _tracker_boxes(rows: np.ndarray, dtype: type) -> np.ndarray:
    """(N, 5) cx, cy, w, h, class; centres computed in float32 from the rows, then cast to `dtype`."""
    return np.stack([rows["x"] + 0.5 * rows["w"], rows["y"] + 0.5 * rows["h"], rows["w"], rows["h"],
                     rows["class_id"].astype(np.float32)], axis=-1).astype(dtype)


def _corners(box: np.ndarray) -> tuple:
    """x0, y0, x1, y1 of a centre-size box, in its precision."""
    cx, cy, w, h = box[:4]
    return cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0


def _iou_centre_size(tracks: np.ndarray, dets: np.ndarray) -> np.ndarray:
    """(T, D) IoU of centre-size boxes, 0 across classes (column 4); 0/0 stays NaN, as in LEOD."""
    a, b = tracks[:, None, :], dets[None, :, :]
    x0 = np.maximum(a[..., 0] - a[..., 2] / 2.0, b[..., 0] - b[..., 2] / 2.0)
    y0 = np.maximum(a[..., 1] - a[..., 3] / 2.0, b[..., 1] - b[..., 3] / 2.0)
    x1 = np.minimum(a[..., 0] + a[..., 2] / 2.0, b[..., 0] + b[..., 2] / 2.0)
    y1 = np.minimum(a[..., 1] + a[..., 3] / 2.0, b[..., 1] + b[..., 3] / 2.0)
    inter = np.maximum(0.0, x1 - x0) * np.maximum(0.0, y1 - y0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)
    iou[a[..., 4] != b[..., 4]] = 0.0
    return iou
