"""A constant-velocity IoU tracker over ground-truth and pseudo boxes, used to drop pseudo boxes that no
track vouches for (FlexEvent's rule, after "Towards Unsupervised Object Detection from LiDAR Point Clouds").

Per step every live track moves its centre by its last velocity (size kept) and claims, most confident
track first, the unclaimed box of its class with the highest IoU >= `match_iou` (greedy, as FlexEvent; the
optimal assignment rarely differs at IoU >= 0.6). A new track starts at confidence q = `decay`; a match
after `age` steps lifts it to (w c + 1) / (w + 1) with w = q + q^2 + ... + q^age, a miss multiplies it by q,
and the track dies below `min_confidence` (0.53 < 0.9^6: six misses in a row). Hits count the boxes a track
claimed. Written by hand because no installed library tracks mixed GT/pseudo boxes with these rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from flexdet.data.boxes import boxes_to_xyxy
from flexdet.fal.config import TrackerConfig


@dataclass
class Track:
    """One tracklet: centre-size box (cx, cy, w, h), velocity per step, class, confidence and history."""

    track_id: int
    box: np.ndarray
    class_id: int
    confidence: float
    has_gt: bool
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    age: int = 0
    hits: int = 1
    alive: bool = True
    gt_track_id: int = -1


class BoxTracker:
    """Feed it one instant at a time with `step(boxes, is_gt)`; `tracks` lists every track ever made."""

    def __init__(self, config: TrackerConfig, width: float, height: float) -> None:
        self.config = config
        self.width, self.height = float(width), float(height)
        self.tracks: list[Track] = []

    @property
    def live(self) -> list[Track]:
        return [track for track in self.tracks if track.alive]

    def step(self, boxes: np.ndarray, is_gt: bool) -> np.ndarray:
        """Advance one instant with these BOX_DTYPE boxes; returns the track index of every box (int64)."""
        live = self.live
        previous = [track.box[:2].copy() for track in live]
        predicted = np.zeros((len(live), 4))
        for i, track in enumerate(live):
            track.age += 1
            track.box[:2] += track.velocity
            predicted[i] = self._clamped_xyxy(track.box)
        pairs = self._match(live, predicted, boxes)
        assigned = np.full(len(boxes), -1, dtype=np.int64)
        claimed = set()
        centres = _centre_size(boxes)
        for i, j in pairs:
            track = live[i]
            track.velocity = centres[j, :2] - previous[i]
            track.box = centres[j].copy()
            track.hits += 1
            weight = sum(self.config.decay ** k for k in range(1, track.age + 1))
            track.confidence = (weight * track.confidence + 1.0) / (weight + 1.0)
            if is_gt:
                track.has_gt = True
                track.gt_track_id = int(boxes["track_id"][j]) if track.gt_track_id < 0 else track.gt_track_id
            assigned[j] = track.track_id
            claimed.add(i)
        for i, track in enumerate(live):
            if i not in claimed:
                track.confidence *= self.config.decay
        for j in np.flatnonzero(assigned < 0):
            self.tracks.append(Track(len(self.tracks), centres[j].copy(), int(boxes["class_id"][j]),
                                     self.config.decay, bool(is_gt),
                                     gt_track_id=int(boxes["track_id"][j]) if is_gt else -1))
            assigned[j] = len(self.tracks) - 1
        for track in live:
            if track.confidence < self.config.min_confidence:
                track.alive = False
        return assigned

    def _match(self, live: list[Track], predicted: np.ndarray, boxes: np.ndarray) -> list[tuple[int, int]]:
        """Greedy class-aware IoU matching, most confident track first."""
        if not live or len(boxes) == 0:
            return []
        import torch
        from torchvision.ops import box_iou

        iou = box_iou(torch.from_numpy(predicted), torch.from_numpy(boxes_to_xyxy(boxes).astype(np.float64))).numpy()
        classes = np.array([track.class_id for track in live])
        iou[classes[:, None] != boxes["class_id"][None, :].astype(np.int64)] = 0.0
        order = np.argsort([-track.confidence for track in live], kind="stable")
        order = order[iou[order].max(axis=1) >= self.config.match_iou]
        taken = np.zeros(len(boxes), dtype=bool)
        pairs = []
        for i in order:
            candidates = np.where(taken, -1.0, iou[i])
            j = int(np.argmax(candidates))
            if candidates[j] >= self.config.match_iou:
                taken[j] = True
                pairs.append((int(i), j))
        return pairs

    def _clamped_xyxy(self, box: np.ndarray) -> np.ndarray:
        cx, cy, w, h = box
        return np.array([np.clip(cx - w / 2, 0, self.width), np.clip(cy - h / 2, 0, self.height),
                         np.clip(cx + w / 2, 0, self.width), np.clip(cy + h / 2, 0, self.height)])


def track_filter(instants: Sequence[np.ndarray], is_gt: Sequence[bool], config: TrackerConfig, width: float,
                 height: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Track the instants in order; returns (keep mask, track id of each box) per instant. A pseudo box is
    kept when its track holds a GT box, has >= min_hits hits, or is still alive after the last instant; GT
    boxes are always kept. Track ids: a track holding GT takes its (first) GT box's id, any other track an
    id above every GT id, so written pseudo boxes link to the GT they continue."""
    tracker = BoxTracker(config, width, height)
    assignments = [tracker.step(boxes, bool(gt)) for boxes, gt in zip(instants, is_gt)]
    trusted = np.array([t.has_gt or t.hits >= config.min_hits or t.alive for t in tracker.tracks], dtype=bool)
    masks = [np.ones(len(a), dtype=bool) if gt else trusted[a] for a, gt in zip(assignments, is_gt)]
    gt_max = max((int(b["track_id"].max()) for b, gt in zip(instants, is_gt) if gt and len(b)), default=-1)
    return masks, [_output_ids(tracker.tracks, a, gt_max) for a in assignments]


def _output_ids(tracks: list[Track], assigned: np.ndarray, gt_max: int) -> np.ndarray:
    """Track id to write: the GT track id for tracks holding GT, else one past every GT id plus the index."""
    return np.array([tracks[a].gt_track_id if tracks[a].gt_track_id >= 0 else gt_max + 1 + a for a in assigned],
                    dtype=np.int64)


def _centre_size(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) float64 cx, cy, w, h from BOX_DTYPE rows."""
    w, h = boxes["w"].astype(np.float64), boxes["h"].astype(np.float64)
    return np.stack([boxes["x"] + w / 2, boxes["y"] + h / 2, w, h], axis=1).reshape(-1, 4)
