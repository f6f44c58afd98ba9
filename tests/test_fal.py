"""FAL / FlexTune pseudo labels: thresholds, time reversal, direction merge, tracker rules, file round trip,
and the whole generation on a tiny synthetic sequence with real (untrained / biased) nano teachers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flexdet.config import apply_overrides
from flexdet.data.boxes import BOX_DTYPE, FILE_BOX_DTYPE
from flexdet.data.events import EVENT_DTYPE
from flexdet.data.labels import read_boxes
from flexdet.data.representations import stacked_histogram
from flexdet.data.representations.reverse import reverse_events, reverse_histogram
from flexdet.errors import ConfigError, FlexdetError
from flexdet.fal.config import FALConfig, StudentConfig, TrackerConfig, student_target
from flexdet.fal.generate import (
    base_times,
    fine_grid,
    pseudo_label_dataset,
    pseudo_label_path,
    pseudo_label_sequence,
    split_pseudo_labels,
    teacher_predictions,
)
from flexdet.fal.pseudo_labels import apply_thresholds, merge_directions
from flexdet.fal.tracker import BoxTracker, track_filter


def rows(*items) -> np.ndarray:
    """BOX_DTYPE rows from (t, x, y, w, h, class_id, confidence[, track_id]) tuples."""
    out = np.zeros(len(items), BOX_DTYPE)
    for i, item in enumerate(items):
        out[i] = tuple(item[:7]) + ((item[7],) if len(item) > 7 else (0,))
    return out


def box(x: float, y: float = 10.0, size: float = 20.0, cls: int = 0, conf: float = 0.9, t: int = 0) -> np.ndarray:
    return rows((t, x, y, size, size, cls, conf))


EMPTY = np.zeros(0, BOX_DTYPE)


# ----- thresholds -----
def test_global_threshold_keeps_strictly_above():
    boxes = rows((0, 0, 0, 5, 5, 0, 0.59), (0, 0, 0, 5, 5, 0, 0.6), (0, 0, 0, 5, 5, 1, 0.61), (0, 0, 0, 5, 5, 1, 0.95))
    kept = apply_thresholds(boxes, 0.6)
    assert kept["class_confidence"].tolist() == pytest.approx([0.61, 0.95])


def test_per_class_thresholds_override_the_global_one():
    boxes = rows((0, 0, 0, 5, 5, 0, 0.65), (0, 0, 0, 5, 5, 0, 0.72), (0, 0, 0, 5, 5, 1, 0.65), (0, 0, 0, 5, 5, 2, 0.74),
                 (0, 0, 0, 5, 5, 2, 0.76))
    kept = apply_thresholds(boxes, 0.6, {0: 0.70, 2: 0.75})
    assert list(zip(kept["class_id"].tolist(), np.round(kept["class_confidence"].astype(np.float64), 2).tolist())) == \
        [(0, 0.72), (1, 0.65), (2, 0.76)]
    assert FALConfig(class_thresholds={0: 0.7}).threshold_of(0) == 0.7
    assert FALConfig(class_thresholds={0: 0.7}).threshold_of(1) == 0.6


def test_config_rejects_unusable_values():
    for bad in ({"factor": 1}, {"confidence_threshold": 1.5}, {"class_thresholds": {0: -0.1}},
                {"tracker": TrackerConfig(min_hits=0)}):
        with pytest.raises(ConfigError):
            FALConfig(**bad)


# ----- time reversal -----
def random_events(rng: np.random.Generator, n: int, t0: int, t1: int, width: int, height: int) -> np.ndarray:
    events = np.zeros(n, EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(t0, t1, n))
    events["t"][:3] = [t0, t1 - 1, t0 + (t1 - t0) // 10]  # both ends and a bin edge are present
    events.sort(order="t")
    events["x"] = rng.integers(0, width, n)
    events["y"] = rng.integers(0, height, n)
    events["p"] = rng.integers(0, 2, n)
    return events


def test_reversing_twice_is_identity():
    rng = np.random.default_rng(0)
    hist = rng.integers(0, 11, (3, 20, 4, 5)).astype(np.uint8)
    assert np.array_equal(reverse_histogram(reverse_histogram(hist)), hist)
    assert torch.equal(reverse_histogram(reverse_histogram(torch.from_numpy(hist))), torch.from_numpy(hist))
    events = random_events(rng, 500, 1000, 26_000, 8, 6)
    twice = reverse_events(reverse_events(events, 1000, 26_000), 1000, 26_000)
    assert np.array_equal(twice, events)


def test_reversed_histogram_swaps_polarity_and_flips_bins():
    rng = np.random.default_rng(1)
    bins = 5
    hist = rng.integers(0, 11, (2 * bins, 3, 4)).astype(np.uint8)
    out = reverse_histogram(hist, bins)
    for p in range(2):
        for b in range(bins):
            assert np.array_equal(out[(1 - p) * bins + (bins - 1 - b)], hist[p * bins + b])


@pytest.mark.parametrize("t0,t1,bins", [(0, 25_000, 10), (123_456, 173_456, 10), (7, 7 + 600, 6)])
def test_histogram_of_reversed_events_equals_reversed_histogram(t0, t1, bins):
    rng = np.random.default_rng(t0)
    events = random_events(rng, 4000, t0, t1, 16, 12)
    forward = stacked_histogram(events, 12, 16, bins, t_start=t0, t_end=t1)
    backward = stacked_histogram(reverse_events(events, t0, t1), 12, 16, bins, t_start=t0, t_end=t1)
    assert forward.sum() > 0
    assert np.array_equal(backward, reverse_histogram(forward, bins))


def test_reverse_events_rejects_events_outside_the_window():
    events = random_events(np.random.default_rng(2), 10, 0, 100, 4, 4)
    with pytest.raises(FlexdetError, match="outside the window"):
        reverse_events(events, 0, 50)
    events["p"][4] = 3
    with pytest.raises(FlexdetError, match="polarity"):
        reverse_events(events, 0, 100)


# ----- union + NMS -----
def test_duplicates_from_both_directions_collapse_to_the_more_confident():
    forward = rows((50, 10, 10, 20, 20, 0, 0.8), (50, 100, 10, 20, 20, 1, 0.7))
    reverse = rows((50, 11, 10, 20, 20, 0, 0.9), (50, 100, 10, 20, 20, 0, 0.65))
    merged = merge_directions(forward, reverse, 0.45)
    # The class-0 pair (IoU 0.905) collapses to the 0.9 copy; the class-1 and class-0 boxes at x=100 both stay.
    assert sorted(zip(merged["class_id"].tolist(), merged["x"].tolist())) == [(0, 11.0), (0, 100.0), (1, 100.0)]
    assert np.isclose(merged[merged["x"] == 11]["class_confidence"][0], 0.9)


def test_nms_threshold_and_instants_are_respected():
    # IoU of two 20x20 boxes shifted by 8 px: 12*20 / (2*400 - 12*20) = 0.4286 < 0.45 -> both kept.
    kept = merge_directions(rows((0, 0, 0, 20, 20, 0, 0.9)), rows((0, 8, 0, 20, 20, 0, 0.8)), 0.45)
    assert len(kept) == 2
    # Shift 6 px: IoU 14*20 / (800 - 280) = 0.538 > 0.45 -> one kept.
    assert len(merge_directions(rows((0, 0, 0, 20, 20, 0, 0.9)), rows((0, 6, 0, 20, 20, 0, 0.8)), 0.45)) == 1
    # Same box at two instants never suppresses itself.
    both = merge_directions(rows((0, 0, 0, 20, 20, 0, 0.9)), rows((25, 0, 0, 20, 20, 0, 0.8)), 0.45)
    assert both["t"].tolist() == [0, 25]
    assert len(merge_directions(EMPTY, EMPTY)) == 0


# ----- tracker -----
def run_filter(instants, is_gt, **tracker):
    masks, ids = track_filter(instants, is_gt, TrackerConfig(**tracker), 400, 200)
    return masks, ids


def test_pseudo_track_linked_to_gt_is_kept():
    # GT at step 0, a pseudo copy at step 1 (2 hits, then it dies), then 8 empty steps and an unrelated box.
    instants = [box(10, cls=1), box(11, cls=1)] + [EMPTY] * 8 + [box(300)]
    masks, ids = run_filter(instants, [True, False] + [False] * 9)
    assert masks[1].tolist() == [True]
    # Its written id continues the GT track's id.
    gt = rows((0, 10, 10, 20, 20, 1, 1.0, 7))
    _, ids = run_filter([gt, box(11, cls=1)] + [EMPTY] * 8 + [box(300)], [True, False] + [False] * 9)
    assert ids[1].tolist() == [7]
    assert ids[10][0] > 7


@pytest.mark.parametrize("hits,kept", [(3, False), (5, False), (6, True), (8, True)])
def test_isolated_pseudo_track_needs_six_hits(hits, kept):
    instants = [box(10.0 + i) for i in range(hits)] + [EMPTY] * 8 + [box(300)]
    masks, _ = run_filter(instants, [False] * len(instants))
    assert all(m.tolist() == [kept] for m in masks[:hits])


def test_track_alive_at_the_end_is_kept():
    instants = [box(300)] + [EMPTY] * 8 + [box(10), box(11)]
    masks, _ = run_filter(instants, [False] * len(instants))
    assert masks[0].tolist() == [False]          # 1 hit, died long before the end
    assert masks[-2].tolist() == [True] and masks[-1].tolist() == [True]


def misses_until_death(confidence: float, decay: float = 0.9, limit: float = 0.53) -> int:
    """Independent count: multiply by `decay` until below `limit`."""
    misses = 0
    while confidence >= limit:
        confidence *= decay
        misses += 1
    return misses


def test_confidence_decay_kills_a_track_after_the_right_number_of_misses():
    born = misses_until_death(0.9)
    assert born == 6  # 0.9 ** 6 = 0.531 survives, 0.9 ** 7 = 0.478 does not
    tracker = BoxTracker(TrackerConfig(), 400, 200)
    tracker.step(box(10), False)
    for _ in range(born - 1):
        tracker.step(EMPTY, False)
    assert tracker.tracks[0].alive
    tracker.step(EMPTY, False)
    assert not tracker.tracks[0].alive
    # After one match at age 1, w = 0.9 and c = (0.9 * 0.9 + 1) / 1.9.
    tracker = BoxTracker(TrackerConfig(decay=0.8, min_confidence=0.3), 400, 200)
    tracker.step(box(10), False)
    tracker.step(box(10), False)
    lifted = (0.8 * 0.8 + 1) / 1.8
    assert math.isclose(tracker.tracks[0].confidence, lifted, rel_tol=1e-9)
    for _ in range(misses_until_death(lifted, 0.8, 0.3) - 1):
        tracker.step(EMPTY, False)
    assert tracker.tracks[0].alive
    tracker.step(EMPTY, False)
    assert not tracker.tracks[0].alive


def test_constant_velocity_prediction_keeps_a_fast_box_on_one_track():
    # Steps of 4 then 8 px: a shift of 8 on a 20 px box has IoU 0.43 < 0.6, so only the predicted
    # position (previous + velocity 4, then 8) brings each new box within IoU >= 0.6 of its track.
    xs = [0, 4, 12, 20, 28, 36]
    tracker = BoxTracker(TrackerConfig(), 400, 200)
    assigned = [int(tracker.step(box(float(x)), False)[0]) for x in xs]
    assert assigned == [0] * len(xs)
    still = BoxTracker(TrackerConfig(), 400, 200)
    assert [int(still.step(box(float(x)), False)[0]) for x in (0, 8)] == [0, 1]


def test_matching_is_class_aware():
    tracker = BoxTracker(TrackerConfig(), 400, 200)
    tracker.step(box(10, cls=0), False)
    assert int(tracker.step(box(10, cls=1), False)[0]) == 1


def test_fine_grid_inserts_instants_exactly():
    assert fine_grid(np.array([0, 50_000, 100_001]), 2).tolist() == [0, 25_000, 50_000, 75_001, 100_001]
    assert fine_grid(np.array([10, 60]), 3).tolist() == [10, 27, 43, 60]  # 16.67 -> 17, 33.33 -> 33
    assert fine_grid(np.array([5]), 2).tolist() == [5]


def test_student_target_weights():
    config = StudentConfig()
    pseudo = student_target(np.zeros((2, 4)), np.array([0, 1]), np.array([0.8, 0.7]), True, config)
    assert np.allclose(pseudo["weights"], [0.8 * 0.15 * 0.65, 0.7 * 0.15 * 0.65])
    assert math.isclose(pseudo["bg_weight"], 0.015 * 0.65)
    empty = student_target(np.zeros((0, 4)), np.zeros(0), np.zeros(0), True, config)
    assert "weights" not in empty and math.isclose(empty["bg_weight"], 0.015 * 0.65)  # weak evidence: down-weighted
    assert "bg_weight" not in student_target(np.zeros((1, 4)), np.array([1]), None, False, config)


# ----- end to end on a tiny synthetic sequence -----
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from flexdet.data.synthetic import generate_dataset, load_preset

    root = tmp_path_factory.mktemp("fal_data")
    config = apply_overrides(load_preset("quickstart"), {
        "scene.width": 96, "scene.height": 64, "scene.duration_s": 1.0, "frames.blur_subframes": 2,
        "dataset.sequences": 1, "dataset.split": [1.0, 0.0, 0.0], "dataset.workers": 1})
    generate_dataset(root, config)
    return root


def confident_teacher():
    """A real nano model whose objectness and class priors are raised so it predicts boxes (scores ~0.55)
    before any training."""
    from flexdet.models import build_model

    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=False).eval()
    with torch.no_grad():
        for conv in model.head.obj_preds:
            conv.bias.fill_(2.0)
        for conv in model.head.cls_preds:
            conv.bias.fill_(0.5)
    return model


def test_generate_with_an_untrained_teacher_writes_a_valid_file(tiny_dataset):
    from flexdet.datasets.sequences import open_dataset
    from flexdet.models import build_model

    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=False)
    [path] = pseudo_label_dataset(model, tiny_dataset, "train", FALConfig(), show_progress=False)
    sequence = open_dataset(tiny_dataset, "train").sequences[0]
    assert path == pseudo_label_path(sequence) and path.name == "pseudo_tracks.npy"
    stored = np.load(path)
    assert stored.dtype == FILE_BOX_DTYPE
    truth = np.load(sequence.path / "object_detections" / "left" / "tracks.npy")
    gt_rows, pseudo = split_pseudo_labels(read_boxes(path), read_boxes(sequence.path / "object_detections" / "left"
                                                                      / "tracks.npy"))
    assert np.array_equal(stored[np.isin(stored["t"], truth["t"])], truth)
    grid = fine_grid(base_times(sequence), 2)
    assert np.all(np.isin(pseudo["t"], grid)) and not np.any(np.isin(pseudo["t"], truth["t"]))


def test_generate_with_a_confident_teacher_adds_tracked_pseudo_boxes(tiny_dataset):
    from flexdet.datasets.sequences import open_dataset

    dataset = open_dataset(tiny_dataset, "train")
    sequence = dataset.sequences[0]
    config = FALConfig(confidence_threshold=0.3)
    boxes = pseudo_label_sequence(confident_teacher(), sequence, dataset.benchmark, config, dataset.input_spec())
    gt_rows, pseudo = split_pseudo_labels(boxes, sequence.labels)
    assert np.array_equal(gt_rows, sequence.labels)
    assert len(pseudo) > 0
    base = base_times(sequence)
    between = fine_grid(base, 2)[~np.isin(fine_grid(base, 2), base)]
    assert np.all(np.isin(pseudo["t"], between))
    assert set(pseudo["class_id"].tolist()) <= {0, 2}  # label-file ids (pedestrian 0, car 2), not model ids
    assert pseudo["class_confidence"].min() > 0.3 and pseudo["class_confidence"].max() < 1.0
    assert pseudo["x"].min() >= 0 and (pseudo["x"] + pseudo["w"]).max() <= 96 + 1e-3
    gt_ids = sequence.labels["track_id"]
    assert np.all(np.isin(pseudo["track_id"], gt_ids) | (pseudo["track_id"] > gt_ids.max()))
    dataset.close()


def test_reversed_stream_matches_a_stream_over_reversed_events(tiny_dataset):
    """Independent reference: reverse the whole event stream once, run the teacher forward over it with
    plain stacked histograms, and compare with the predictions of the reversed pass (25 ms windows, a
    multiple of 10 bins, so the two reversals are exactly equal)."""
    from flexdet.datasets.sequences import open_dataset
    from flexdet.evaluation.coco_eval import predictions_as_boxes

    dataset = open_dataset(tiny_dataset, "train")
    sequence = dataset.sequences[0]
    grid = fine_grid(base_times(sequence), 2)[:13]
    model = confident_teacher()
    _, backward = teacher_predictions(model, sequence, dataset.input_spec(), grid)
    t0, t1 = int(grid[0]), int(grid[-1])
    flipped = reverse_events(sequence.recording().read(t0, t1), t0, t1)
    width, height = dataset.geometry.size
    state = None
    for m in range(len(grid) - 2, -1, -1):
        start, end = t0 + t1 - int(grid[m + 1]), t0 + t1 - int(grid[m])
        hist = stacked_histogram(flipped, height, width, 10, t_start=start, t_end=end)
        with torch.no_grad():
            detections, state = model(torch.from_numpy(hist)[None].float(), None, state)
        reference = predictions_as_boxes(detections[0])
        reference = reference[np.argsort(-reference["class_confidence"])][:20]
        got = backward[m]
        assert len(reference) > 0 and np.all(got["t"] == grid[m])
        for row in reference:
            close = (got["class_id"] == row["class_id"]) & (np.abs(got["class_confidence"] - row["class_confidence"]) < 1e-4)
            close &= (np.abs(got["x"] - row["x"]) < 1e-2) & (np.abs(got["y"] - row["y"]) < 1e-2)
            assert close.any(), f"step {m}: reference box {row} missing from the reversed pass"
    dataset.close()


def test_generate_reports_the_pseudo_boxes_it_kept_not_the_label_rows(tiny_dataset, capsys):
    from flexdet.datasets.sequences import open_dataset

    [path] = pseudo_label_dataset(confident_teacher(), tiny_dataset, "train", FALConfig(confidence_threshold=0.3),
                                  show_progress=True)
    sequence = open_dataset(tiny_dataset, "train").sequences[0]
    _, pseudo = split_pseudo_labels(read_boxes(path), read_boxes(path.with_name("tracks.npy")))
    instants = len(fine_grid(base_times(sequence), 2)) - len(base_times(sequence))
    assert len(pseudo) > 0
    assert (f"pseudo labels: {len(pseudo)} boxes kept at {instants} in-between instants of 1 sequences "
            f"(the label files hold {len(sequence.labels)} boxes)") in capsys.readouterr().out


def test_cli_pseudo_label_with_an_exported_checkpoint(tiny_dataset, tmp_path):
    from flexdet.cli import main
    from flexdet.data.input_spec import identity_spec
    from flexdet.models.checkpoint import save_model

    checkpoint = save_model(tmp_path / "teacher.pt", confident_teacher(), identity_spec(64, 96))
    assert main(["pseudo-label", str(checkpoint), "--data", str(tiny_dataset), "--threshold", "0.3",
                 "--no-progress"]) == 0
    path = next(tiny_dataset.glob("train/*/object_detections/left/pseudo_tracks.npy"))
    assert np.load(path).dtype == FILE_BOX_DTYPE
    assert main(["pseudo-label", str(tmp_path / "missing.pt"), "--data", str(tiny_dataset)]) == 2
    assert main(["pseudo-label", str(checkpoint), "--data", str(tiny_dataset), "--factor", "1"]) == 2


def test_cli_pseudo_label_with_a_training_checkpoint(tiny_dataset, tmp_path):
    from flexdet.cli import main
    from flexdet.config import to_dict
    from flexdet.training.checkpoint import save_checkpoint
    from flexdet.training.config import TrainConfig

    teacher = confident_teacher()
    checkpoint = save_checkpoint(tmp_path / "last.pt", {"model": teacher.state_dict(), "config": to_dict(TrainConfig()),
                                                        "model_config": to_dict(teacher.config), "step": 0})
    path = next(tiny_dataset.glob("train/*/object_detections/left/")) / "pseudo_tracks.npy"
    path.unlink(missing_ok=True)
    assert main(["pseudo-label", str(checkpoint), "--data", str(tiny_dataset), "--threshold", "0.3", "--forward-only",
                 "--class-threshold", "1=0.99", "--no-progress"]) == 0
    _, pseudo = split_pseudo_labels(read_boxes(path), read_boxes(path.with_name("tracks.npy")))
    # Model class 1 (car, file id 2) needs > 0.99, which no ~0.55 score reaches: only pedestrians (id 0) remain.
    assert len(pseudo) > 0 and set(pseudo["class_id"].tolist()) == {0}


def test_reversal_on_real_events():
    """Real EVT2 recording (reference decode): histogram of the reversed events == reversed histogram."""
    from pathlib import Path

    reference = Path(__file__).parents[1] / ".." / "shared" / "data" / "real" / "evt2_gen3_640x480.reference.npz"
    if not reference.is_file():
        pytest.skip(f"real recordings not found at {reference}")
    with np.load(reference) as data:
        events = np.zeros(len(data["t"]), EVENT_DTYPE)
        for name in ("t", "x", "y", "p"):
            events[name] = data[name]
    t0 = int(events["t"][0])
    t1 = t0 + 40_000
    window = events[(events["t"] >= t0) & (events["t"] < t1)]
    forward = stacked_histogram(window, 480, 640, 10, t_start=t0, t_end=t1)
    backward = stacked_histogram(reverse_events(window, t0, t1), 480, 640, 10, t_start=t0, t_end=t1)
    assert forward.sum() > 100_000
    assert np.array_equal(backward, reverse_histogram(forward))
