"""FAL / FlexTune settings as dataclasses: grid factor, confidence thresholds, NMS, tracker, student losses.

Defaults are FlexEvent's DSEC-Det 2-class recipe (method.md §3): confidence > 0.6, class-wise NMS 0.45,
tracker IoU 0.6 / decay 0.9 / death below 0.53 / 6 hits, student lr 5e-5 with pseudo positives x teacher
confidence x 0.15, pseudo background objectness x 0.015 and the pseudo term x 0.65.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flexdet.errors import ConfigError

RULES = ("flexdet", "flextune")


@dataclass
class TrackerConfig:
    """Constant-velocity IoU tracker over GT + pseudo boxes (FlexEvent's linear tracker)."""

    match_iou: float = 0.6
    decay: float = 0.9
    min_confidence: float = 0.53
    min_hits: int = 6


@dataclass
class StudentConfig:
    """Fine-tuning the student from the teacher on GT + pseudo labels."""

    lr: float = 5e-5
    steps: int = 2000
    box_weight: float = 0.15
    background_weight: float = 0.015
    loss_weight: float = 0.65


@dataclass
class FALConfig:
    """Everything the pseudo-labelling and the student fine-tune need.

    `factor` = how many teacher steps per label interval (2: 40 Hz for 20 Hz labels). `class_thresholds`
    maps evaluated class ids to their own threshold (FlexEvent's 8-class setting uses 0.70-0.75); other
    classes use `confidence_threshold`. A prediction is kept when its score is strictly above.
    `rule`: "flexdet" (flexdet's chain: grid snapped to the label instants, its tracker, generate.py) or
    "flextune" (FlexEvent's own label stream, flextune.py: its uniform grid over the frame times, the teacher's
    class probability as score, its size filter and LEOD's tracker; with FlexEvent's per-class thresholds on
    its 8-class benchmarks when `class_thresholds` is empty).
    """

    factor: int = 2
    confidence_threshold: float = 0.6
    class_thresholds: dict[int, float] = field(default_factory=dict)
    nms_iou: float = 0.45
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    both_directions: bool = True
    rule: str = "flexdet"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for values no pseudo-labelling run can use."""
        if self.rule not in RULES:
            raise ConfigError(f"fal.rule must be one of {RULES}, got {self.rule!r}")
        if int(self.factor) != self.factor or self.factor < 2:
            raise ConfigError(f"fal.factor must be an integer >= 2 (teacher steps per label interval), "
                              f"got {self.factor}")
        thresholds = {"confidence_threshold": self.confidence_threshold, "nms_iou": self.nms_iou,
                      "tracker.match_iou": self.tracker.match_iou, "tracker.decay": self.tracker.decay,
                      "tracker.min_confidence": self.tracker.min_confidence}
        thresholds.update({f"class_thresholds[{k}]": v for k, v in self.class_thresholds.items()})
        for name, value in thresholds.items():
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"fal.{name} must be in [0, 1], got {value}")
        if any(int(k) != k or k < 0 for k in self.class_thresholds):
            raise ConfigError(f"fal.class_thresholds keys must be class ids >= 0, got {sorted(self.class_thresholds)}")
        if self.tracker.min_hits < 1:
            raise ConfigError(f"fal.tracker.min_hits must be >= 1, got {self.tracker.min_hits}")
        student = self.student
        if student.lr <= 0 or student.steps < 1 or min(student.box_weight, student.background_weight,
                                                           student.loss_weight) < 0:
            raise ConfigError("fal.student: lr must be positive, steps >= 1 and weights >= 0")

    def threshold_of(self, class_id: int) -> float:
        """The confidence a prediction of `class_id` must exceed."""
        return float(self.class_thresholds.get(int(class_id), self.confidence_threshold))


def student_target(boxes_xyxy: np.ndarray, labels: np.ndarray, confidences: np.ndarray | None,
                   pseudo: bool, config: StudentConfig) -> dict:
    """One sample's target for `FlexDetector.compute_losses`. A pseudo-labelled step weights each positive by
    teacher confidence x box_weight x loss_weight and background objectness by background_weight x
    loss_weight, also when the teacher kept no box there: "the teacher saw nothing" is weak evidence, and
    teaching it at full weight (as for GT) drove students of weak teachers to predict nothing at all."""
    target = {"boxes": np.asarray(boxes_xyxy, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64)}
    if not pseudo:
        return target
    target["bg_weight"] = float(config.background_weight * config.loss_weight)
    if len(target["labels"]) == 0:
        return target
    if confidences is None or len(confidences) != len(target["labels"]):
        raise ConfigError("pseudo targets need one teacher confidence per box")
    target["weights"] = (np.asarray(confidences, np.float32) * np.float32(config.box_weight * config.loss_weight))
    return target
