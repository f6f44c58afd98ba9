"""`flexdet pseudo-label --rule flextune` (fal.rule "flextune"): the teacher's predictions on FlexTune's grid go
through `flextune_labels` (FlexEvent's label stream, checked row for row against FlexEvent in test_flextune.py) and
its rows at the in-between instants are what the student reads from pseudo_tracks.npy. Run end to end on a tiny
synthetic DSEC-Det sequence (640x480, scored as dsec2: 320x215 model frame) with a real nano teacher."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from test_fal import confident_teacher

from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.clock import fine_grid
from flexdet.data.labels import read_boxes
from flexdet.datasets.benchmarks import DSEC_CLASSES, dsec_eight_class_benchmark, dsec_two_class_benchmark
from flexdet.errors import ConfigError
from flexdet.fal import generate
from flexdet.fal.config import FALConfig
from flexdet.fal.flextune import (
    FLEXTUNE_POSTPROCESS,
    flextune_config,
    flextune_grid,
    flextune_labels,
    student_pseudo_rows,
)
from flexdet.fal.generate import pseudo_label_dataset, split_pseudo_labels
from flexdet.training.recipes import TrainingLabels

FIELDS = ("t", "x", "y", "w", "h", "class_id", "class_confidence", "track_id")


# Frame-time jitter (µs) written into the synthetic sequence, as real cameras have it: FlexTune's uniform grid then
# differs from the student's grid split per interval, so the test sees which grid each step uses.
JITTER_US = np.array([0, 700, -900, 400, -300, 800, 0])


@pytest.fixture(scope="module")
def dsec_data(tmp_path_factory):
    """One 0.3 s DSEC-Det-like sequence: 640x480 events + RGB, labels on the 20 Hz frames, frame times (and the
    labels on them) jittered."""
    from flexdet.cli import main

    root = tmp_path_factory.mktemp("flextune_dsec")
    assert main(["synth", "--out", str(root), "--preset", "dsec", "--layout", "dsec", "--size", "640x480",
                 "--sequences", "1", "--duration", "0.3", "--split", "1,0,0", "--workers", "1", "--seed", "0"]) == 0
    folder = root / "train" / "synth_000"
    frames = np.loadtxt(folder / "images" / "timestamps.txt", dtype=np.int64)
    moved = frames + JITTER_US
    np.savetxt(folder / "images" / "timestamps.txt", moved, fmt="%d")
    tracks_path = folder / "object_detections" / "left" / "tracks.npy"
    tracks = np.load(tracks_path)
    tracks["t"] = moved[np.searchsorted(frames, tracks["t"].astype(np.int64))]
    np.save(tracks_path, tracks)
    return root


def test_flextune_rule_writes_flextune_labels_of_the_teachers_predictions(dsec_data, monkeypatch):
    """The wiring: the teacher runs on flextune_grid of the frame times with FlexEvent's postprocess, both
    directions go to flextune_labels with the sequence's label file and frame times, and the pseudo rows written are
    exactly its rows at the in-between instants, in the label file's frame (x2) and class ids (car 0 -> 2,
    pedestrian 1 -> 0), at the student's in-between instants."""
    from flexdet.datasets.sequences import open_dataset

    calls = []
    original = generate.teacher_predictions

    def recorded(model, sequence, spec, grid, reverse=True, device="cpu", progress=None, postprocess=None):
        out = original(model, sequence, spec, grid, reverse, device, progress, postprocess)
        calls.append({"grid": np.array(grid), "reverse": reverse, "postprocess": postprocess, "out": out})
        return out

    monkeypatch.setattr(generate, "teacher_predictions", recorded)
    config = FALConfig(rule="flextune")
    [path] = pseudo_label_dataset(confident_teacher(), dsec_data, "train", config, benchmark="dsec2",
                                  show_progress=False)
    dataset = open_dataset(dsec_data, "train", benchmark="dsec2")
    try:
        sequence = dataset.sequences[0]
        [call] = calls
        frames = np.asarray(sequence.frame_times, np.int64)
        grid = fine_grid(frames, 2)  # the student's
        assert not np.array_equal(flextune_grid(frames, 2), grid)
        np.testing.assert_array_equal(call["grid"], flextune_grid(frames, 2))
        assert call["reverse"] and call["postprocess"] == FLEXTUNE_POSTPROCESS
        forward, backward = (np.concatenate(rows) for rows in call["out"])
        theirs = flextune_labels(forward, backward, sequence.labels, frames, FALConfig(), dsec_two_class_benchmark())
        between = theirs[np.isin(theirs["t"], call["grid"][1::2])]
        expected = between.copy()
        for name in ("x", "y", "w", "h"):
            expected[name] = between[name] * np.float32(2)
        expected["class_id"] = np.where(between["class_id"] == 0, 2, 0)
        expected["t"] = grid[np.searchsorted(call["grid"], between["t"])]

        written = read_boxes(path)
        gt_rows, pseudo = split_pseudo_labels(written, sequence.labels)
        np.testing.assert_array_equal(gt_rows, sequence.labels.astype(BOX_DTYPE))  # label rows kept as they are
        assert len(pseudo) > 0 and len(pseudo) == len(expected)
        for name in FIELDS:
            np.testing.assert_array_equal(pseudo[name], expected[name], err_msg=name)
        # The score is the class probability (~0.62 for this teacher), not objectness x class (~0.55, which the
        # default threshold 0.6 would drop entirely).
        assert pseudo["class_confidence"].min() > 0.6 and set(pseudo["class_id"].tolist()) <= {0, 2}
        assert np.isin(theirs["t"], call["grid"][0::2]).any()  # rows at the frames exist and are left out

        # The student reads them: every in-between instant is a pseudo step, the label instants are GT steps.
        labels = TrainingLabels("pseudo", config.factor)
        rows, is_pseudo = labels.at(sequence, int(grid[1]))
        assert is_pseudo and len(rows) == (pseudo["t"] == grid[1]).sum()
        rows, is_pseudo = labels.at(sequence, int(grid[2]))
        assert not is_pseudo and np.array_equal(rows["t"], sequence.labels["t"][sequence.labels["t"] == grid[2]])
    finally:
        dataset.close()


def test_flextune_moves_midpoint_rows_to_the_students_grid():
    """Jittered frames: FlexTune's uniform grid sits off the frames, the student's grid is split per interval; the
    k-th in-between rows move to the student's k-th in-between instant, rows at frame indices are left out."""
    frames = np.array([0, 50_010, 99_990, 150_000])
    grid, student = flextune_grid(frames, 2), fine_grid(frames, 2)
    assert grid.tolist() == [0, 25_000, 50_000, 75_000, 100_000, 125_000, 150_000]
    assert student.tolist() == [0, 25_005, 50_010, 75_000, 99_990, 124_995, 150_000]
    rows = np.zeros(6, BOX_DTYPE)
    rows["t"] = [0, 25_000, 25_000, 50_000, 50_010, 125_000]  # frame, 2 pseudo, frame, GT at its own time, pseudo
    rows["x"] = np.arange(6)
    out = student_pseudo_rows(rows, grid, student, 2)
    assert out["t"].tolist() == [25_005, 25_005, 124_995] and out["x"].tolist() == [1, 2, 5]
    three = flextune_grid(frames, 3)
    rows["t"] = three[[1, 2, 3, 4]][[0, 1, 2, 3, 3, 3]]
    assert student_pseudo_rows(rows, three, fine_grid(frames, 3), 3)["t"].tolist() == \
        fine_grid(frames, 3)[[1, 2, 4, 4, 4]].tolist()


def test_flextune_uses_flexevents_classwise_thresholds_on_its_8_class_benchmarks():
    classwise = {0: 0.70, 1: 0.75, 2: 0.75, 3: 0.75, 4: 0.70, 5: 0.75, 6: 0.70}
    # FlexEvent's 8-class mode scores the 7 classes that have boxes (train has none)
    seven = dataclasses.replace(dsec_eight_class_benchmark(), class_names=DSEC_CLASSES[:7],
                                class_map={i: i for i in range(7)})
    assert flextune_config(FALConfig(), seven).class_thresholds == classwise
    assert flextune_config(FALConfig(), dsec_eight_class_benchmark()).class_thresholds == classwise  # train: 0.6
    assert flextune_config(FALConfig(), dsec_two_class_benchmark()).class_thresholds == {}
    own = FALConfig(class_thresholds={2: 0.9})
    assert flextune_config(own, seven) is own


def test_flextune_rule_needs_frames_and_a_known_rule():
    with pytest.raises(ConfigError, match="fal.rule"):
        FALConfig(rule="flexevent")
    sequence = types.SimpleNamespace(name="rec", frame_times=None, labels=np.zeros(0, BOX_DTYPE))
    with pytest.raises(ConfigError, match="no frames"):
        generate.label_grid(sequence, FALConfig(rule="flextune"))


def test_cli_rule_flextune(tmp_path):
    """`flexdet pseudo-label --rule flextune` on a synthetic set scored in its own frame (96x64)."""
    from flexdet.cli import main
    from flexdet.config import apply_overrides
    from flexdet.data.input_spec import identity_spec
    from flexdet.data.synthetic import generate_dataset, load_preset
    from flexdet.models.checkpoint import save_model

    root = tmp_path / "data"
    generate_dataset(root, apply_overrides(load_preset("quickstart"), {
        "scene.width": 96, "scene.height": 64, "scene.duration_s": 0.5, "frames.blur_subframes": 2,
        "dataset.sequences": 1, "dataset.split": [1.0, 0.0, 0.0], "dataset.workers": 1}))
    checkpoint = save_model(tmp_path / "teacher.pt", confident_teacher(), identity_spec(64, 96))
    assert main(["pseudo-label", str(checkpoint), "--data", str(root), "--rule", "flextune", "--no-progress"]) == 0
    path = next(root.glob("train/*/object_detections/left/pseudo_tracks.npy"))
    _, pseudo = split_pseudo_labels(read_boxes(path), read_boxes(path.with_name("tracks.npy")))
    # DSEC's training size filter (w > 10, h > 10, diagonal > 20) holds in any frame under FlexTune's rule
    assert len(pseudo) > 0 and np.all((pseudo["w"] > 10) & (pseudo["h"] > 10))
    with pytest.raises(SystemExit):
        main(["pseudo-label", str(checkpoint), "--data", str(root), "--rule", "other"])
