"""FlexTune pseudo labels against FlexEvent's own builder (tests/fixtures/flextune: scripts/build_pseudo_labels.py
with LEOD's tracker, run on synthetic teacher predictions by make_flextune_fixture.py): same rows, same order."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from flexdet.data.boxes import BOX_DTYPE
from flexdet.fal import flextune
from flexdet.fal.config import FALConfig, TrackerConfig
from flexdet.fal.flextune import (
    LinearTracker,
    clip_last_pixel,
    flextune_grid,
    flextune_labels,
    nms_merge,
    select_predictions,
    trainable,
)

FIXTURE = Path(__file__).parent / "fixtures" / "flextune" / "flextune.npz"
SEQUENCES = ("seq_a", "seq_b", "seq_c")
FIELDS = ("t", "x", "y", "w", "h", "class_id", "class_confidence", "track_id")


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE))


def part(fixture: dict[str, np.ndarray], sequence: str, name: str) -> np.ndarray:
    """BOX_DTYPE rows of one stored part (the fixture's fields, by name)."""
    columns = {f: fixture[f"{sequence}_{name}_{f}"] for f in FIELDS if f"{sequence}_{name}_{f}" in fixture}
    out = np.zeros(len(columns["t"]), dtype=BOX_DTYPE)
    for name_, values in columns.items():
        out[name_] = values
    return out


def config_of(fixture: dict[str, np.ndarray], sequence: str) -> FALConfig:
    """FALConfig with the thresholds FlexEvent's run recorded in its summary.json."""
    summary = json.loads(str(fixture[f"{sequence}_summary"]))
    assert summary["class_mode"] == "2class"
    return FALConfig(confidence_threshold=summary["confidence_threshold"],
                     class_thresholds={int(k): v for k, v in (summary["class_thresholds"] or {}).items()},
                     nms_iou=summary["nms_threshold"],
                     tracker=TrackerConfig(min_hits=summary["min_track_hits"]))


def labels(fixture: dict[str, np.ndarray], sequence: str, config: FALConfig) -> np.ndarray:
    return flextune_labels(part(fixture, sequence, "forward"), part(fixture, sequence, "reverse"),
                           part(fixture, sequence, "gt"), fixture[f"{sequence}_image_timestamps"], config)


def assert_same_rows(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert len(ours) == len(theirs)
    for name in FIELDS:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_merged_predictions_match_flexevent(fixture, sequence):
    """Thresholds, last-pixel clip, size filter and class-wise NMS give FlexEvent's `pseudo`, in its order."""
    config = config_of(fixture, sequence)
    kept = []
    for direction in ("forward", "reverse"):
        boxes = select_predictions(part(fixture, sequence, direction), 2, config.confidence_threshold,
                                   config.class_thresholds)
        boxes = clip_last_pixel(boxes, 320, 215)
        kept.append(boxes[trainable(boxes)])
    assert_same_rows(nms_merge(*kept, config.nms_iou), part(fixture, sequence, "merged"))


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_labels_match_flexevent_row_for_row(fixture, sequence):
    """The whole chain equals FlexEvent's output file exactly: count, order and every field, floats bit for bit."""
    theirs = part(fixture, sequence, "labels")
    ours = labels(fixture, sequence, config_of(fixture, sequence))
    assert_same_rows(ours, theirs)
    gt_times = np.unique(fixture[f"{sequence}_gt_t"].astype(np.int64))
    assert (~np.isin(ours["t"], gt_times)).sum() > 100  # pseudo rows between the labels
    grid = flextune_grid(fixture[f"{sequence}_image_timestamps"])
    off = np.abs(gt_times[:, None] - grid[None, :]).min(axis=1)
    assert np.any((off > 1000) & (off <= 8000)) and np.any(off > 8000)  # GT fed but dropped; GT never fed


def test_fixture_covers_the_rules(fixture):
    """The scenes exercise what the check is about: NMS across directions, the size filter, the tracker."""
    for sequence in SEQUENCES:
        config = config_of(fixture, sequence)
        forward, reverse = part(fixture, sequence, "forward"), part(fixture, sequence, "reverse")
        selected = [select_predictions(b, 2, config.confidence_threshold, config.class_thresholds)
                    for b in (forward, reverse)]
        clipped = [clip_last_pixel(b, 320, 215) for b in selected]
        assert sum((~trainable(b)).sum() for b in clipped) > 0
        assert len(part(fixture, sequence, "merged")) < sum(trainable(b).sum() for b in clipped)
    assert config_of(fixture, "seq_b").class_thresholds == {0: 0.75, 1: 0.70}
    assert config_of(fixture, "seq_c").confidence_threshold == 0.3


@pytest.mark.parametrize("change", [
    {"tracker": TrackerConfig(min_hits=5)},
    {"both_directions": False},
    {"tracker": TrackerConfig(match_iou=0.5)},
    {"nms_iou": 0.6},
])
def test_check_fails_on_other_rules(fixture, change):
    """The comparison can fail: a different min_hits, no reverse merge, match IoU or NMS give other rows."""
    sequence = "seq_a"
    ours = labels(fixture, sequence, dataclasses.replace(config_of(fixture, sequence), **change))
    theirs = part(fixture, sequence, "labels")
    with pytest.raises(AssertionError):
        assert_same_rows(ours, theirs)


def test_check_fails_without_flexevents_arithmetic(fixture, monkeypatch):
    """seq_c needs two of LEOD's arithmetic details: GT boxes tracked in float32 (float64 flips a clamp at the
    border) and a NaN IoU (zero-area prediction vs zero-area box) voiding a step's matching."""
    theirs = part(fixture, "seq_c", "labels")
    config = config_of(fixture, "seq_c")
    assert_same_rows(labels(fixture, "seq_c", config), theirs)
    boxes, iou = flextune._tracker_boxes, flextune._iou_centre_size
    for name, variant in (("_tracker_boxes", lambda rows, dtype: boxes(rows, np.float64)),
                          ("_iou_centre_size", lambda a, b: np.nan_to_num(iou(a, b), nan=0.0))):
        with monkeypatch.context() as patch:
            patch.setattr(flextune, name, variant)
            with pytest.raises(AssertionError):
                assert_same_rows(labels(fixture, "seq_c", config), theirs)


def test_tracker_hits_count_steps_not_boxes():
    """LEOD's hits: steps from a track's first box to its last match (a gap counts), so 2 boxes 5 steps apart
    reach 6 hits; a zero-area box ends its track at the next step."""
    tracker = LinearTracker(TrackerConfig(), 320, 215)
    box = np.array([[100.0, 100.0, 40.0, 30.0, 0.0]])
    tracker.step(box, is_gt=False)
    for _ in range(4):
        tracker.step(np.zeros((0, 5)), is_gt=False)
    tracker.step(box, is_gt=False)
    assert [t.hits for t in tracker.tracks] == [6]
    flat = np.array([[50.0, 214.0, 40.0, 0.0, 1.0]])
    tracker.step(flat, is_gt=True)
    tracker.step(np.zeros((0, 5)), is_gt=False)
    assert tracker.tracks[1].done and tracker.tracks[1].is_gt
    assert tracker.trusted().tolist() == [True, True, True]


def test_grid_is_uniform_between_first_and_last_frame():
    frames = np.array([0, 50_010, 99_990, 150_000])
    np.testing.assert_array_equal(flextune_grid(frames), [0, 25_000, 50_000, 75_000, 100_000, 125_000, 150_000])
