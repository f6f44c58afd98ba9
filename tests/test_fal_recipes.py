"""FAL recipes: teacher / student overlays, the per-step label source (sparse, GT + weighted pseudo), grid-aligned
clips, starting from a teacher's weights, and the whole chain (`flexdet fal`) on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_datasets import tiny_dataset

from flexdet.cli import main
from flexdet.config import apply_overrides
from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.writers import write_boxes
from flexdet.datasets import WindowCache, open_dataset
from flexdet.errors import ConfigError, FormatError
from flexdet.fal.config import StudentConfig
from flexdet.fal.generate import pseudo_label_path
from flexdet.training.augment import ClipAugment
from flexdet.training.clips import ClipLoader, ClipSampler
from flexdet.training.config import AugmentConfig, load_train_config
from flexdet.training.recipes import TrainingLabels, apply_recipe

TINY = ["data.downsample=2", "data.batch_size=2", "data.clip_steps=2", "optim.lr=0.001", "run.progress=false",
        "run.threads=1", "run.log_every=1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("fal_recipes"))


def test_teacher_overlay_doubles_the_rate_and_keeps_label_instants_only():
    base = load_train_config(preset="quickstart", overrides=["data.rates_hz=[20.0]", "fal.factor=3"])
    teacher = apply_recipe(base, "teacher")
    assert teacher.data.rates_hz == [60.0] and teacher.data.labels == "sparse"
    assert teacher.optim == base.optim and teacher.model == base.model


def test_student_overlay_takes_the_student_settings_and_needs_a_teacher():
    base = load_train_config(preset="quickstart", overrides=["data.clip_steps=3", "fal.student.lr=1e-4",
                                                             "fal.student.steps=7"])
    student = apply_recipe(base, "student", init="teacher.pt")
    assert student.data.labels == "pseudo" and student.data.rates_hz == [40.0]
    assert student.optim.lr == 1e-4 and student.optim.steps == 7 and student.model.init == "teacher.pt"
    assert student.data.clip_align == 2 and student.data.clip_steps == 4  # rounded up to whole intervals
    with pytest.raises(ConfigError, match="teacher"):
        apply_recipe(base, "student")
    with pytest.raises(ConfigError, match="recipe"):
        apply_recipe(base, "pupil")
    with pytest.raises(ConfigError, match="clip_align"):
        apply_overrides(base, {"data.clip_align": 2})  # 3 steps do not split into whole intervals


def _loader(root: Path, labels):
    dataset = open_dataset(root, "train", downsample=2)
    cache = WindowCache(dataset.input_spec())
    return ClipLoader(dataset, cache, [40.0], True, labels), dataset


def test_sparse_labels_are_the_label_file_instants(data_root):
    loader, dataset = _loader(data_root, TrainingLabels("sparse"))
    sequence = dataset.sequences[0]
    _, ends = loader.cache.windows(sequence, 40.0)
    labelled = [int(t) for t in ends if loader.target(sequence, int(t), ClipAugment(), 48, 32) is not None]
    file_times = np.unique(np.load(sequence.path / "object_detections" / "left" / "tracks.npy")["t"]).astype(int)
    assert labelled == [t for t in file_times.tolist() if t in set(ends.tolist())]
    assert len(labelled) >= 4 and len(labelled) * 2 >= len(ends) - 1  # every other 40 Hz step
    # Without a label source the synthetic data's dense ground truth labels every step.
    dense = ClipLoader(dataset, loader.cache, [40.0], True)
    assert all(dense.target(sequence, int(t), ClipAugment(), 48, 32) is not None for t in ends)
    dataset.close()


def _write_pseudo(sequence, rows: list[tuple]) -> Path:
    pseudo = np.zeros(len(rows), BOX_DTYPE)
    for i, (t, x, y, w, h, cls, conf) in enumerate(rows):
        pseudo[i] = (t, x, y, w, h, cls, conf, 99)
    merged = np.concatenate([sequence.labels.astype(BOX_DTYPE), pseudo])
    path = pseudo_label_path(sequence)
    write_boxes(path, merged[np.argsort(merged["t"], kind="stable")])
    return path


def test_pseudo_steps_get_weighted_targets_and_gt_steps_plain_ones(data_root):
    labels = TrainingLabels("pseudo", 2, StudentConfig(box_weight=0.15, background_weight=0.015, loss_weight=0.65))
    loader, dataset = _loader(data_root, labels)
    sequence = dataset.sequences[0]
    times = np.unique(sequence.labels["t"]).astype(np.int64)
    mid_a, mid_b = int((times[1] + times[2]) // 2), int((times[2] + times[3]) // 2)
    # Two boxes at one in-between instant (file frame 96x64, car = file class 2), none at the next one.
    path = _write_pseudo(sequence, [(mid_a, 10, 10, 40, 30, 2, 0.8), (mid_a, 50, 20, 30, 30, 0, 0.9)])
    try:
        target = loader.target(sequence, mid_a, ClipAugment(), 48, 32)
        order = np.argsort(target["labels"].numpy())
        np.testing.assert_allclose(target["boxes"].numpy()[order], [[25, 10, 40, 25], [5, 5, 25, 20]])
        assert target["labels"].numpy()[order].tolist() == [0, 1]  # pedestrian (file 0) -> 0, car (2) -> 1
        np.testing.assert_allclose(target["weights"].numpy()[order], [0.9 * 0.15 * 0.65, 0.8 * 0.15 * 0.65],
                                   rtol=1e-6)
        assert target["bg_weight"] == pytest.approx(0.015 * 0.65)
        empty = loader.target(sequence, mid_b, ClipAugment(), 48, 32)  # no kept pseudo box: weak background
        assert len(empty["labels"]) == 0 and empty["bg_weight"] == pytest.approx(0.015 * 0.65)
        gt = loader.target(sequence, int(times[2]), ClipAugment(), 48, 32)
        assert "weights" not in gt and "bg_weight" not in gt
        assert loader.target(sequence, mid_a + 1000, ClipAugment(), 48, 32) is None  # off the 2x grid
    finally:
        path.unlink()
    dataset.close()


def test_pseudo_labels_missing_or_off_grid_are_clear_errors(data_root):
    loader, dataset = _loader(data_root, TrainingLabels("pseudo", 2))
    sequence = dataset.sequences[0]
    times = np.unique(sequence.labels["t"]).astype(np.int64)
    with pytest.raises(ConfigError, match="pseudo-label"):
        loader.target(sequence, int((times[1] + times[2]) // 2), ClipAugment(), 48, 32)
    path = _write_pseudo(sequence, [(int(times[1]) + 10_000, 10, 10, 40, 30, 2, 0.8)])
    try:
        with pytest.raises(FormatError, match="grid"):
            TrainingLabels("pseudo", 2).at(sequence, int((times[1] + times[2]) // 2))
    finally:
        path.unlink()
    dataset.close()


def test_aligned_sampler_starts_on_whole_intervals():
    sampler = ClipSampler([[41], [37]], batch_size=6, clip_steps=4, stream_fraction=0.5,
                          augment=AugmentConfig(hflip=0, zoom_in_prob=0, zoom_out_prob=0), size=(48, 32), align=2)
    starts = [clip.start for _ in range(60) for clip in sampler.next_batch()]
    assert all(s % 2 == 0 for s in starts)
    assert max(starts) >= 30 and min(starts) == 0


def test_student_starts_from_the_teacher_weights(data_root, tmp_path):
    from flexdet.training.trainer import Trainer, train

    config = load_train_config(preset="quickstart", overrides=TINY + ["model.inputs=events", "optim.steps=1"])
    teacher = train(config, data_root, tmp_path / "teacher").checkpoint
    saved = torch.load(teacher, weights_only=True)["model"]
    fresh = Trainer(apply_overrides(config, {"run.seed": 5}), data_root, tmp_path / "fresh")
    started = Trainer(apply_overrides(config, {"run.seed": 5, "model.init": str(teacher)}), data_root,
                      tmp_path / "student")
    try:
        for name, value in saved.items():
            assert torch.equal(started.detector.state_dict()[name], value), name
        assert any(not torch.equal(fresh.detector.state_dict()[n], v) for n, v in saved.items() if v.is_floating_point())
    finally:
        fresh.close()
        started.close()


def test_cli_student_without_teacher_is_a_clean_error(data_root, tmp_path, capsys):
    assert main(["train", "--preset", "quickstart", "--recipe", "student", "--data", str(data_root),
                 "--out", str(tmp_path / "s")]) == 2
    assert "teacher" in capsys.readouterr().err


@pytest.mark.slow
def test_fal_chain_end_to_end(data_root, tmp_path):
    """teacher -> pseudo labels -> student -> evaluation, through the CLI, on a tiny dataset."""
    import json

    out = tmp_path / "fal"
    assert main(["fal", "--data", str(data_root), "--out", str(out), "--rates", "20,60", *TINY,
                 "model.inputs=fusion", "optim.steps=2", "fal.student.steps=2", "fal.confidence_threshold=0.0"]) == 0
    written = sorted(data_root.glob("train/*/object_detections/left/pseudo_tracks.npy"))
    assert written
    for path in written:
        boxes = np.load(path)
        gt = np.load(path.with_name("tracks.npy"))
        assert np.isin(gt["t"], boxes["t"]).all() and np.all(np.diff(boxes["t"].astype(np.int64)) >= 0)
    rows = json.loads((out / "metrics.json").read_text())
    assert sorted((r["model"], r["rate_hz"]) for r in rows) == [("student", 20.0), ("student", 60.0),
                                                               ("teacher", 20.0), ("teacher", 60.0)]
    student = torch.load(out / "student" / "checkpoints" / "last.pt", weights_only=True)
    assert student["step"] == 2 and student["config"]["data"]["labels"] == "pseudo"
    assert student["config"]["model"]["init"] == str(out / "teacher" / "checkpoints" / "last.pt")
    for path in written:
        path.unlink()
