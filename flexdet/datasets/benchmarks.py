"""Benchmarks: which classes are scored, at what resolution, which boxes count and how instants are matched.

A Benchmark turns label-file boxes (BOX_DTYPE, in the sensor's frame and the dataset's class ids) into the
boxes it scores (class map, crop + downscale, its clipping rule, size filter, warm-up skip), treats
predictions the way the official evaluation does; flexdet.evaluation.benchmark_score scores both with COCO AP
under those rules. The rules of gen1 / 1mpx / dsec2 / dsec8 and their sources are in docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexdet.data.boxes import clip_boxes
from flexdet.data.geometry import Geometry
from flexdet.errors import ConfigError

GRANULARITIES = ("instant", "sequence")


@dataclass(frozen=True)
class SizeFilter:
    """Keep boxes whose diagonal and both sides reach the minimums (`strict`: exceed them).

    Computed in float32 as the official code does: inclusive (Prophesee) as w^2 + h^2 >= diag^2, strict
    (DAGr) as sqrt(w^2 + h^2) > diag, so boxes exactly on a threshold fall on the same side.
    """

    min_diag: float = 0.0
    min_side: float = 0.0
    strict: bool = False

    def keep(self, boxes: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows of `boxes` (fields w, h) that pass."""
        w = np.asarray(boxes["w"], np.float32)
        h = np.asarray(boxes["h"], np.float32)
        side = np.float32(self.min_side)
        if self.strict:
            return (np.sqrt(w * w + h * h) > np.float32(self.min_diag)) & (w > side) & (h > side)
        return (w * w + h * h >= np.float32(self.min_diag) ** 2) & (w >= side) & (h >= side)

    def divided(self, factor: int) -> SizeFilter:
        """The same filter for boxes `factor` times smaller (RVT halves Prophesee's thresholds at half size)."""
        return dataclasses.replace(self, min_diag=self.min_diag / factor, min_side=self.min_side / factor)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's rules.

    `class_map` maps label-file class ids to evaluated ids (ids absent from it are dropped; None keeps ids
    below num_classes). Boxes are cropped to the top `crop_height` rows and divided by `scale`. Scored
    ground truth is clipped by `clip`: "frame" (to the frame edge, dropping empty boxes), "last_pixel"
    (to [0, W-1] x [0, H-1], DAGr) or "none" (Prophesee: full boxes, also past the edge). Boxes at or
    before `skip_us` after the recording start are dropped. `filter_predictions` applies the size and time
    filter to predictions as well. Predictions count for a labelled instant when they lie within
    `time_tol_us` of it; `granularity` "instant" scores each labelled instant with the prediction set
    nearest to it in time (RVT's validation), "sequence" pools every prediction within the tolerance
    (the Prophesee toolbox over whole files). Instants whose ground truth is all filtered out are not
    scored unless `score_empty_instants` (flexdet's own dense-stream rule). `layouts`: the label layouts it scores;
    `file_classes`: how many class ids (0..n-1) its label files hold (None: the evaluated classes).
    """

    name: str
    class_names: tuple[str, ...]
    sensor_size: tuple[int, int]
    class_map: Mapping[int, int] | None = None
    crop_height: int | None = None
    scale: int = 1
    eval_filter: SizeFilter = field(default_factory=SizeFilter)
    train_filter: SizeFilter = field(default_factory=SizeFilter)
    skip_us: int = 0
    clip: str = "frame"
    filter_predictions: bool = True
    time_tol_us: int = 0
    granularity: str = "instant"
    score_empty_instants: bool = False
    layouts: tuple[str, ...] = ()
    file_classes: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of evaluated classes (ids 0..num_classes-1)."""
        return len(self.class_names)

    def geometry(self, event_downscale: str = "bin", frame_resize: str = "area") -> Geometry:
        """The frame boxes are scored in, as the model input frame: the sensor's crop and scale, with how events
        and frames reach it."""
        width, height = self.sensor_size
        return Geometry(int(width), int(height), self.crop_height, int(self.scale), frame_resize, event_downscale)

    @property
    def eval_size(self) -> tuple[int, int]:
        """(width, height) of the frame boxes are scored in."""
        return self.geometry().size

    def downsampled(self, factor: int) -> Benchmark:
        """The benchmark at `factor` times lower resolution: scale and size thresholds follow (RVT's rule)."""
        if int(factor) == 1:
            return self
        return dataclasses.replace(self, scale=self.scale * int(factor), eval_filter=self.eval_filter.divided(factor),
                                   train_filter=self.train_filter.divided(factor))

    def map_classes(self, boxes: np.ndarray) -> np.ndarray:
        """Rows whose class is evaluated, with evaluated class ids."""
        if self.class_map is None:
            return boxes[boxes["class_id"] < self.num_classes]
        lookup = np.full(256, -1, dtype=np.int16)
        for source, target in self.class_map.items():
            lookup[source] = target
        ids = np.asarray(boxes["class_id"], np.int64)
        mapped = np.where(ids < 256, lookup[np.minimum(ids, 255)], -1)
        out = boxes[mapped >= 0].copy()
        out["class_id"] = mapped[mapped >= 0]
        return out

    def label_class_ids(self) -> np.ndarray:
        """Label-file class id of each evaluated class: the smallest file id mapped to it (DSEC 2-class car -> 2)."""
        if self.class_map is None:
            return np.arange(self.num_classes, dtype=np.int64)
        inverse: dict[int, int] = {}
        for source, target in sorted(self.class_map.items()):
            inverse.setdefault(int(target), int(source))
        return np.array([inverse[c] for c in range(self.num_classes)], dtype=np.int64)

    def to_eval_frame(self, boxes: np.ndarray, clip: str = "frame") -> np.ndarray:
        """Crop to the top `crop_height` rows and divide by `scale`, then clip by `clip` (see the class)."""
        out = boxes.copy()
        for name in ("x", "y", "w", "h"):
            out[name] = np.asarray(boxes[name], np.float32) / np.float32(self.scale)
        width, height = self.eval_size
        if clip == "frame":
            return clip_boxes(out, width, height)
        if clip == "last_pixel":
            x0, y0 = np.clip(out["x"], 0, width - 1), np.clip(out["y"], 0, height - 1)
            x1 = np.clip(out["x"] + out["w"], 0, width - 1)
            y1 = np.clip(out["y"] + out["h"], 0, height - 1)
            out["x"], out["y"], out["w"], out["h"] = x0, y0, x1 - x0, y1 - y0
            return out
        if clip == "none":
            return out
        raise ConfigError(f"benchmark {self.name}: unknown clip rule {clip!r} (frame, last_pixel, none)")

    def to_label_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Inverse of the resolution transform (the crop keeps the top rows, so only the scale undoes)."""
        out = boxes.copy()
        for name in ("x", "y", "w", "h"):
            out[name] = boxes[name] * np.float32(self.scale)
        return out

    def filter_boxes(self, boxes: np.ndarray, recording_start_us: int = 0, training: bool = False) -> np.ndarray:
        """Boxes (eval frame) passing the size filter and, when `skip_us` > 0, later than `skip_us` after the
        recording start. Prophesee recordings start at t = 0 (the toolbox assumes it): t > 0.5 s there."""
        size_filter = self.train_filter if training else self.eval_filter
        keep = size_filter.keep(boxes)
        if self.skip_us > 0:
            keep &= np.asarray(boxes["t"], np.int64) > recording_start_us + self.skip_us
        return boxes[keep]

    def prepare_ground_truth(self, boxes: np.ndarray, recording_start_us: int = 0,
                             training: bool = False) -> np.ndarray:
        """Label-file boxes -> the ground truth this benchmark scores (training: clipped to the frame and
        the training filter, the form a detector learns from)."""
        clip = "frame" if training else self.clip
        boxes = self.to_eval_frame(self.map_classes(boxes), clip)
        return self.filter_boxes(boxes, recording_start_us, training)

    def prepare_predictions(self, boxes: np.ndarray, recording_start_us: int = 0) -> np.ndarray:
        """Predictions in the label files' frame and class ids -> the rows this benchmark scores."""
        boxes = self.to_eval_frame(self.map_classes(boxes), "none")
        return self.filter_scored_predictions(boxes, recording_start_us)

    def filter_scored_predictions(self, boxes: np.ndarray, recording_start_us: int = 0) -> np.ndarray:
        """Eval-frame predictions as the official evaluation keeps them (filtered like GT, or all)."""
        return self.filter_boxes(boxes, recording_start_us) if self.filter_predictions else boxes


PROPHESEE_RULES = dict(skip_us=500_000, clip="none", filter_predictions=True, time_tol_us=50_000,
                       layouts=("gen1", "rvt"))
DSEC_CLASSES = ("pedestrian", "rider", "car", "bus", "truck", "bicycle", "motorcycle", "train")
# DAGr's 2-class DSEC-Det benchmark (classes = ("car", "pedestrian"), DSEC.MAPPING): car, bus and truck
# score as car (0), pedestrian as pedestrian (1); rider, bicycle, motorcycle and train are not evaluated.
DSEC_TWO_CLASS_MAP = {2: 0, 3: 0, 4: 0, 0: 1}
# DAGr's test filter at half resolution (diag > 15, sides > 10); FlexEvent's training filter (> 20, > 10).
DSEC_EVAL_FILTER = SizeFilter(min_diag=15.0, min_side=10.0, strict=True)
DSEC_TRAIN_FILTER = SizeFilter(min_diag=20.0, min_side=10.0, strict=True)
DSEC_RULES = dict(clip="last_pixel", filter_predictions=False, time_tol_us=0, layouts=("dsec",),
                  file_classes=len(DSEC_CLASSES))


def gen1_benchmark() -> Benchmark:
    """Prophesee Gen1 as RVT scores it (304x240, car/pedestrian): t > 0.5 s, diagonal >= 30, sides >= 10."""
    size = SizeFilter(min_diag=30.0, min_side=10.0)
    return Benchmark(name="gen1", class_names=("car", "pedestrian"), sensor_size=(304, 240),
                     eval_filter=size, train_filter=size, file_classes=2, **PROPHESEE_RULES)


def one_megapixel_benchmark() -> Benchmark:
    """Prophesee 1Mpx as RVT scores it (1280x720): classes 0-2 only, t > 0.5 s, diagonal >= 60, sides >= 20."""
    size = SizeFilter(min_diag=60.0, min_side=20.0)
    return Benchmark(name="1mpx", class_names=("pedestrian", "two-wheeler", "car"), sensor_size=(1280, 720),
                     class_map={0: 0, 1: 1, 2: 2}, eval_filter=size, train_filter=size, file_classes=7,
                     **PROPHESEE_RULES)


def dsec_two_class_benchmark() -> Benchmark:
    """DSEC-Det, 2 classes (DAGr / FlexEvent), top 430 rows at half resolution -> 320x215."""
    return Benchmark(name="dsec2", class_names=("car", "pedestrian"), sensor_size=(640, 480),
                     class_map=DSEC_TWO_CLASS_MAP, crop_height=430, scale=2,
                     eval_filter=DSEC_EVAL_FILTER, train_filter=DSEC_TRAIN_FILTER, **DSEC_RULES)


def dsec_eight_class_benchmark() -> Benchmark:
    """DSEC-Det, all 8 classes with their own ids, top 430 rows at half resolution -> 320x215."""
    return Benchmark(name="dsec8", class_names=DSEC_CLASSES, sensor_size=(640, 480), crop_height=430, scale=2,
                     eval_filter=DSEC_EVAL_FILTER, train_filter=DSEC_TRAIN_FILTER, **DSEC_RULES)


# FlexEvent scores DSEC-Det with its own evaluator (utils/evaluation/dsec.py `DSECEvaluator`, run by
# modules/detection.py with config/dataset/dsec.yaml's downsample_by_factor_2: false), not DAGr's: ground truth and
# predictions both keep t > 500_000 and w**2 + h**2 >= 30**2, w >= 10, h >= 10 (float32, inclusive, at the half
# resolution its boxes are in), then COCO AP. Its DSEC class filters label frames with min_bbox_diag 20 /
# min_bbox_height 10 beforehand (strict): the training filter, as for dsec2. Class map, crop, scale and clipping are
# DAGr's; the 8-class mode scores 7 classes (data/dsec_utils/class_config.py: train has no boxes).
FLEXEVENT_RULES = dict(eval_filter=SizeFilter(min_diag=30.0, min_side=10.0, strict=False), filter_predictions=True,
                       skip_us=500_000)


def flexevent_two_class_benchmark() -> Benchmark:
    """DSEC-Det, 2 classes (car + bus + truck, pedestrian), as FlexEvent's evaluator scores it."""
    return dataclasses.replace(dsec_two_class_benchmark(), name="flexevent2", **FLEXEVENT_RULES)


def flexevent_eight_class_benchmark() -> Benchmark:
    """DSEC-Det in FlexEvent's 8-class mode: the 7 classes with boxes (train left out), as its evaluator scores it."""
    return dataclasses.replace(dsec_eight_class_benchmark(), name="flexevent8", class_names=DSEC_CLASSES[:7],
                               class_map={i: i for i in range(7)}, **FLEXEVENT_RULES)


def synthetic_benchmark(class_names: Sequence[str], width: int, height: int, min_side: float = 2.0) -> Benchmark:
    """A synthetic dataset (class names from its dataset.yaml): identity classes, sides >= `min_side` px,
    every instant with dense ground truth scored, empty ones included (flexdet's own rule)."""
    if not class_names:
        raise ConfigError("the synthetic benchmark needs the dataset's class names (dataset.yaml 'classes')")
    size = SizeFilter(min_side=float(min_side))
    return Benchmark(name="synthetic", class_names=tuple(class_names), sensor_size=(int(width), int(height)),
                     eval_filter=size, train_filter=size, score_empty_instants=True, layouts=("synthetic",))


BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
    "gen1": gen1_benchmark,
    "1mpx": one_megapixel_benchmark,
    "dsec2": dsec_two_class_benchmark,
    "dsec8": dsec_eight_class_benchmark,
    "flexevent2": flexevent_two_class_benchmark,
    "flexevent8": flexevent_eight_class_benchmark,
    "synthetic": synthetic_benchmark,
}


def stored_benchmark(data: Mapping[str, Any]) -> str:
    """The benchmark a checkpoint's training data section (or dataset record) names, "auto" if none; flexdet
    0.1.0 checkpoints call it "protocol"."""
    return str(data.get("benchmark", data.get("protocol", "auto")))


def get_benchmark(name: str, **options: Any) -> Benchmark:
    """The benchmark registered as `name` (gen1, 1mpx, dsec2, dsec8, flexevent2, flexevent8, synthetic; synthetic takes
    class_names, width, height and optionally min_side)."""
    factory = BENCHMARKS.get(name.lower())
    if factory is None:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    try:
        return factory(**options)
    except TypeError as problem:
        raise ConfigError(f"benchmark {name!r}: {problem}") from None

