"""Ground truth at any time: exact label instants, DAGr's interframe interpolation and dense (1 ms) labels.

All functions take BOX_DTYPE label arrays sorted by `t`, where every box of one labelled instant shares `t`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from flexdet.data.boxes import boxes_to_xyxy
from flexdet.errors import ConfigError, FlexdetError


class InterframeDelta(NamedTuple):
    """One step of the DAGr interframe benchmark: events span `delta_us` after the frame."""

    delta_us: int
    rate_hz: float | None
    name: str


def label_times(boxes: np.ndarray) -> np.ndarray:
    """The distinct labelled instants (int64 µs, ascending)."""
    _check_sorted(boxes)
    return np.unique(boxes["t"]).astype(np.int64)


def labels_at(boxes: np.ndarray, t: int) -> np.ndarray:
    """The boxes labelled exactly at `t` (empty when `t` is not a labelled instant)."""
    _check_sorted(boxes)
    lo, hi = np.searchsorted(boxes["t"], [t, t + 1], side="left")
    return boxes[lo:hi]


def interpolate_pair(boxes0: np.ndarray, boxes1: np.ndarray, t: int | float) -> np.ndarray:
    """Boxes at `t` linearly interpolated by track_id between two labelled instants (DAGr's rule).

    Only tracks present at both instants survive; class, confidence and id come from `boxes0`; rows are
    ordered by track_id and carry t = int(`t`). A float `t` (FlexEvent's float interframe offsets) sets the
    ratio itself; past the second instant the boxes extrapolate.
    """
    if len(boxes0) == 0 or len(boxes1) == 0:
        return boxes0[:0].copy()
    t0, t1 = int(boxes0["t"][0]), int(boxes1["t"][0])
    if t1 <= t0:
        raise FlexdetError(f"interpolate_pair: second instant {t1} µs is not after the first {t0} µs")
    _, index0, index1 = np.intersect1d(boxes0["track_id"], boxes1["track_id"], return_indices=True)
    start, end = boxes0[index0], boxes1[index1]
    ratio = (t - t0) / (t1 - t0)
    out = start.copy()
    for name in ("x", "y", "w", "h"):
        out[name] = start[name].astype(np.float64) * (1.0 - ratio) + end[name].astype(np.float64) * ratio
    out["t"] = int(t)
    return out


def interpolate_labels(boxes: np.ndarray, t: int) -> np.ndarray:
    """Ground truth at any `t`: the labels themselves at a labelled instant, otherwise the interpolation
    between the labelled instants just before and just after `t`; empty outside the labelled span."""
    times = label_times(boxes)
    k = int(np.searchsorted(times, t, side="right"))
    if k > 0 and times[k - 1] == t:
        return labels_at(boxes, t)
    if k == 0 or k == len(times):
        return boxes[:0].copy()
    return interpolate_pair(labels_at(boxes, times[k - 1]), labels_at(boxes, times[k]), t)


def persistent_pairs(boxes: np.ndarray, min_iou: float = 0.1,
                     frame_times: np.ndarray | None = None) -> np.ndarray:
    """(K, 2) int64 (t0, t1) of consecutive labelled instants whose tracks persist (DAGr's "perfect tracks").

    A pair is kept when both instants have boxes, they hold the same set of track ids, and every track's
    two boxes overlap with IoU >= `min_iou`. With `frame_times` (the image timestamps), the two instants
    must also be consecutive frames. Pass ground truth already prepared by the benchmark (classes, frame,
    size filter), as DAGr does.
    """
    import torch
    from torchvision.ops import box_iou

    times, starts, ends = _instants(boxes)
    if frame_times is not None:
        frame_index = np.searchsorted(frame_times, times)
        on_frame = (frame_index < len(frame_times)) & (frame_times[np.minimum(frame_index, len(frame_times) - 1)]
                                                       == times)
        consecutive = on_frame[:-1] & on_frame[1:] & (np.diff(frame_index) == 1)
    else:
        consecutive = np.ones(max(len(times) - 1, 0), dtype=bool)
    kept = []
    for k in np.flatnonzero(consecutive):
        first, second = boxes[starts[k]:ends[k]], boxes[starts[k + 1]:ends[k + 1]]
        first = first[np.argsort(first["track_id"], kind="stable")]
        second = second[np.argsort(second["track_id"], kind="stable")]
        if len(first) != len(second) or not np.array_equal(first["track_id"], second["track_id"]):
            continue
        iou = box_iou(torch.from_numpy(boxes_to_xyxy(first)), torch.from_numpy(boxes_to_xyxy(second)))
        if float(torch.diagonal(iou).min()) >= min_iou:
            kept.append((times[k], times[k + 1]))
    return np.asarray(kept, dtype=np.int64).reshape(-1, 2)


def interframe_targets(boxes: np.ndarray, pairs: np.ndarray, delta_us: int | float) -> list[np.ndarray]:
    """For each (t0, t1) pair, the ground truth at t0 + `delta_us` (a float offset interpolates at the float
    instant) interpolated between the pair."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    times, starts, ends = _instants(boxes)
    index = np.searchsorted(times, pairs)
    if len(pairs) and (index.max() >= len(times) or not np.array_equal(times[index], pairs)):
        raise FlexdetError("interframe_targets: every pair time must be a labelled instant of these labels")
    return [interpolate_pair(boxes[starts[i]:ends[i]], boxes[starts[j]:ends[j]], int(t0) + delta_us)
            for (i, j), t0 in zip(index, pairs[:, 0])]


def dense_labels_at(boxes: np.ndarray, t: int, step_us: int = 1000, origin_us: int = 0,
                    interpolate: bool = False) -> np.ndarray:
    """Ground truth from dense labels (a synthetic dataset's box every `step_us` on a grid from `origin_us`).

    Without `interpolate`: the boxes of the grid instant at or before `t` (a grid instant without rows
    means no object then). With it: interpolation by track between that instant and the next one.
    """
    if step_us <= 0:
        raise ConfigError(f"dense labels need a positive step, got {step_us} µs")
    grid = origin_us + ((int(t) - origin_us) // step_us) * step_us
    before = labels_at(boxes, grid)
    if not interpolate or grid == t:
        return before
    return interpolate_pair(before, labels_at(boxes, grid + step_us), t)


def format_rate(rate_hz: float | None) -> str:
    """A rate as people write it: 20, 25.7, 1000 (up to 3 decimals, no trailing zeros); None -> 'empty'."""
    if rate_hz is None:
        return "empty"
    return f"{float(rate_hz):.3f}".rstrip("0").rstrip(".")


def interframe_deltas(max_us: int = 50_000, count: int = 10) -> list[InterframeDelta]:
    """DAGr's interframe deltas int(linspace(0, 50 ms, 10)) and their rates: empty, 180, 90, ... 20 Hz."""
    deltas = []
    for value in np.linspace(0, max_us, count):
        delta = int(value)
        rate = round(1e6 / delta, 1) if delta > 0 else None
        deltas.append(InterframeDelta(delta, rate, format_rate(rate)))
    return deltas


def _instants(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled instants and the [start, end) row range of each, found once for a whole sequence."""
    _check_sorted(boxes)
    times, starts = np.unique(boxes["t"], return_index=True)
    ends = np.append(starts[1:], len(boxes)) if len(starts) else starts
    return times.astype(np.int64), starts, ends


def _check_sorted(boxes: np.ndarray) -> None:
    """Label lookups binary-search on t: refuse unsorted labels instead of answering wrongly."""
    t = boxes["t"]
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        index = int(np.flatnonzero(t[1:] < t[:-1])[0]) + 1
        raise FlexdetError(f"labels must be sorted by time; box {index} (t={int(t[index])} µs) comes after "
                           f"t={int(t[index - 1])} µs")

