"""Evaluation protocols: which classes are scored, at what resolution, and which boxes count.

A Protocol turns label-file boxes (BOX_DTYPE, in the sensor's frame and the dataset's class ids) into
the boxes a benchmark scores: class map, crop + downscale, clip, size filter and the warm-up skip. The
same size and time filter applies to predictions, which are already in the evaluated frame and ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexdet.data.boxes import clip_boxes
from flexdet.errors import ConfigError


@dataclass(frozen=True)
class SizeFilter:
    """Keep boxes whose diagonal and both sides reach the minimums (`strict`: exceed them)."""

    min_diag: float = 0.0
    min_side: float = 0.0
    strict: bool = False

    def keep(self, boxes: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows of `boxes` (BOX_DTYPE) that pass."""
        w = boxes["w"].astype(np.float64)
        h = boxes["h"].astype(np.float64)
        diag = np.hypot(w, h)
        if self.strict:
            return (diag > self.min_diag) & (w > self.min_side) & (h > self.min_side)
        return (diag >= self.min_diag) & (w >= self.min_side) & (h >= self.min_side)


@dataclass(frozen=True)
class Protocol:
    """One benchmark's rules. `class_map` maps label-file class ids to evaluated ids (ids absent from it
    are dropped; None keeps ids as they are). Boxes are cropped to the top `crop_height` rows, divided by
    `scale` and clipped to `eval_size`; boxes earlier than `skip_us` after the sequence start are dropped.
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

    @property
    def num_classes(self) -> int:
        """Number of evaluated classes (ids 0..num_classes-1)."""
        return len(self.class_names)

    @property
    def eval_size(self) -> tuple[int, int]:
        """(width, height) of the frame boxes are scored in."""
        width, height = self.sensor_size
        if self.crop_height is not None:
            height = min(height, self.crop_height)
        return width // self.scale, height // self.scale

    def map_classes(self, boxes: np.ndarray) -> np.ndarray:
        """Rows whose class is evaluated, with evaluated class ids."""
        if self.class_map is None:
            return boxes[boxes["class_id"] < self.num_classes]
        lookup = np.full(256, -1, dtype=np.int16)
        for source, target in self.class_map.items():
            lookup[source] = target
        mapped = lookup[boxes["class_id"]]
        out = boxes[mapped >= 0].copy()
        out["class_id"] = mapped[mapped >= 0]
        return out

    def to_eval_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Crop to the top `crop_height` rows, divide by `scale`, clip to `eval_size` (drops empty boxes).

        DAGr clips to width-1 / height-1; flexdet clips to the frame edge like every other reader.
        """
        out = boxes.copy()
        for name in ("x", "y", "w", "h"):
            out[name] = boxes[name] / np.float32(self.scale)
        width, height = self.eval_size
        return clip_boxes(out, width, height)

    def to_label_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Inverse of the resolution transform (the crop keeps the top rows, so only the scale undoes)."""
        out = boxes.copy()
        for name in ("x", "y", "w", "h"):
            out[name] = boxes[name] * np.float32(self.scale)
        return out

    def filter_boxes(self, boxes: np.ndarray, sequence_start_us: int = 0, training: bool = False) -> np.ndarray:
        """Boxes (eval frame) passing the size filter and not in the skipped start; for GT and predictions."""
        size_filter = self.train_filter if training else self.eval_filter
        keep = size_filter.keep(boxes) & (boxes["t"] >= sequence_start_us + self.skip_us)
        return boxes[keep]

    def prepare_ground_truth(self, boxes: np.ndarray, sequence_start_us: int = 0,
                             training: bool = False) -> np.ndarray:
        """Label-file boxes -> the ground truth this protocol scores (classes, frame, filters)."""
        boxes = self.to_eval_frame(self.map_classes(boxes))
        return self.filter_boxes(boxes, sequence_start_us, training)


DSEC_CLASSES = ("pedestrian", "rider", "car", "bus", "truck", "bicycle", "motorcycle", "train")
# DAGr's 2-class DSEC-Det protocol (classes = ("car", "pedestrian")): car, bus and truck score as car (0),
# pedestrian as pedestrian (1); rider, bicycle, motorcycle and train are not evaluated.
DSEC_TWO_CLASS_MAP = {2: 0, 3: 0, 4: 0, 0: 1}
# DAGr's test filter at half resolution (diag > 15, sides > 10); FlexEvent's training filter (> 20, > 10).
DSEC_EVAL_FILTER = SizeFilter(min_diag=15.0, min_side=10.0, strict=True)
DSEC_TRAIN_FILTER = SizeFilter(min_diag=20.0, min_side=10.0, strict=True)


def gen1_protocol() -> Protocol:
    """Prophesee Gen1 (304x240, car/pedestrian): skip the first 0.5 s, diagonal >= 30 and sides >= 10."""
    size = SizeFilter(min_diag=30.0, min_side=10.0)
    return Protocol(name="gen1", class_names=("car", "pedestrian"), sensor_size=(304, 240),
                    eval_filter=size, train_filter=size, skip_us=500_000)


def one_megapixel_protocol() -> Protocol:
    """Prophesee 1Mpx (1280x720, full resolution): classes 0-2 only, skip 0.5 s, diagonal >= 60, sides >= 20."""
    size = SizeFilter(min_diag=60.0, min_side=20.0)
    return Protocol(name="1mpx", class_names=("pedestrian", "two-wheeler", "car"), sensor_size=(1280, 720),
                    class_map={0: 0, 1: 1, 2: 2}, eval_filter=size, train_filter=size, skip_us=500_000)


def dsec_two_class_protocol() -> Protocol:
    """DSEC-Det, 2 classes (DAGr / FlexEvent), top 430 rows at half resolution -> 320x215."""
    return Protocol(name="dsec2", class_names=("car", "pedestrian"), sensor_size=(640, 480),
                    class_map=DSEC_TWO_CLASS_MAP, crop_height=430, scale=2,
                    eval_filter=DSEC_EVAL_FILTER, train_filter=DSEC_TRAIN_FILTER)


def dsec_eight_class_protocol() -> Protocol:
    """DSEC-Det, all 8 classes with their own ids, top 430 rows at half resolution -> 320x215."""
    return Protocol(name="dsec8", class_names=DSEC_CLASSES, sensor_size=(640, 480), crop_height=430, scale=2,
                    eval_filter=DSEC_EVAL_FILTER, train_filter=DSEC_TRAIN_FILTER)


def synthetic_protocol(class_names: Sequence[str], width: int, height: int, min_side: float = 2.0) -> Protocol:
    """A synthetic dataset (class names from its dataset.yaml): identity classes, sides >= `min_side` px."""
    if not class_names:
        raise ConfigError("the synthetic protocol needs the dataset's class names (dataset.yaml 'classes')")
    size = SizeFilter(min_side=float(min_side))
    return Protocol(name="synthetic", class_names=tuple(class_names), sensor_size=(int(width), int(height)),
                    eval_filter=size, train_filter=size)


PROTOCOLS: dict[str, Callable[..., Protocol]] = {
    "gen1": gen1_protocol,
    "1mpx": one_megapixel_protocol,
    "dsec2": dsec_two_class_protocol,
    "dsec8": dsec_eight_class_protocol,
    "synthetic": synthetic_protocol,
}


def get_protocol(name: str, **options: Any) -> Protocol:
    """The protocol registered as `name` (gen1, 1mpx, dsec2, dsec8, synthetic; synthetic takes
    class_names, width, height and optionally min_side)."""
    factory = PROTOCOLS.get(name.lower())
    if factory is None:
        raise ConfigError(f"unknown evaluation protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    try:
        return factory(**options)
    except TypeError as problem:
        raise ConfigError(f"protocol {name!r}: {problem}") from None
