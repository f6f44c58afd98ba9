"""The real-data recipes (gen1, 1mpx: RVT-B's; dsec-det: FlexEvent's) load and train two steps on tiny data of
each dataset's layout, and the checkpoint records the recipe's network, inputs and benchmark.

Sizes are cut by overrides only (steps, batch, clip length, threads; the 1 Mpx tree also a coarser
downsampling), so the network, inputs, histogram rule and benchmark are the recipe's own. Gen1 runs on RVT's peer
fixture in both forms: the Gen1 tree RVT's preprocessing read (*_td.dat + *_bbox.npy) and RVT's preprocessed
output; 1 Mpx on a 1280x720 Prophesee tree and on RVT's stored 640x360 windows; DSEC-Det on a DSEC-Det root, where
FlexEvent's FlexTune presets (flextune-teacher, flextune-balanced) also run as a chain with `pseudo-label --rule
flextune` between them.
The 1 Mpx recipe's inputs of a real 1280x720 recording are RVT's own histograms (tests/fixtures/rvt_gen4).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_rvt_dataset import _rvt_folder

from flexdet.cli import main
from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.events import EVENT_DTYPE
from flexdet.data.writers import write_boxes, write_dat
from flexdet.datasets import open_dataset
from flexdet.errors import ConfigError
from flexdet.models.checkpoint import load_model, read_training_checkpoint
from flexdet.training.config import load_train_config, recipe_names
from flexdet.training.trainer import training_input_spec

PEERS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "peers" / "rvt_preprocessed_gen1"
GEN4 = Path(__file__).parent / "fixtures" / "rvt_gen4" / "gen4_histograms.npz"
TINY = ["optim.steps=2", "data.batch_size=2", "data.clip_steps=2", "run.threads=1", "run.progress=false",
        "run.checkpoint_every=2"]
BASE_WIDTHS = [64, 128, 256, 512]  # RVT-B


def train_tiny(preset: str, data: Path, out: Path, *overrides: str):
    """`flexdet train --preset` for two steps; the loaded checkpoint and the training payload."""
    assert main(["train", "--preset", preset, "--data", str(data), "--out", str(out), *TINY, *overrides]) == 0
    checkpoint = out / "checkpoints" / "last.pt"
    return load_model(checkpoint), read_training_checkpoint(checkpoint)


def test_real_data_recipes_are_shipped():
    assert {"gen1", "1mpx", "dsec-det"} <= set(recipe_names())


@pytest.mark.parametrize("form", ["input", "rvt_output"])
def test_gen1_recipe_trains_on_a_gen1_tree_and_on_rvt_preprocessed_data(form, tmp_path):
    if not (PEERS / form).is_dir():
        pytest.skip("RVT peer fixture is not available (../shared/data/peers next to the checkout)")
    loaded, payload = train_tiny("gen1", PEERS / form, tmp_path / "run")
    config = loaded.model.config
    assert payload["step"] == 2
    assert config.widths == BASE_WIDTHS and config.neck_depth == 2 and not config.use_frames
    assert config.partition_split == 1 and config.conf_thresh == pytest.approx(1e-3)
    assert loaded.dataset["benchmark"] == "gen1" and loaded.dataset["layout"] == ("gen1" if form == "input" else "rvt")
    spec = loaded.spec
    assert (spec.size, spec.window_us, spec.bins, spec.time_norm, spec.end_inclusive) == (
        (304, 240), 50_000, 10, "events", True)
    assert spec.geometry.event_downscale == "bin"  # full resolution: no downscale rule to choose
    recipe = payload["config"]
    assert recipe["optim"]["lr"] == pytest.approx(2e-4) and recipe["optim"]["weight_decay"] == 0.0
    assert recipe["optim"]["warmup_pct"] == pytest.approx(0.005) and recipe["data"]["clip_end"] == "labelled"


def test_1mpx_recipe_trains_on_a_1280x720_prophesee_tree(tmp_path):
    recipe = load_train_config(preset="1mpx")
    assert (recipe.data.downsample, recipe.data.batch_size, recipe.data.clip_steps) == (2, 24, 5)
    assert recipe.data.event_downscale == "nearest_exact"  # RVT's halving
    data = tmp_path / "mpx"
    assert main(["synth", "--out", str(data), "--preset", "gen1", "--layout", "gen1", "--size", "1280x720",
                 "--sequences", "1", "--duration", "0.3", "--split", "1,0,0", "--workers", "1", "--seed", "0"]) == 0
    # data.layout=gen1: read the synthetic set as the Prophesee tree it is (its dataset.yaml would make it
    # 'synthetic'); downsample 4 instead of the recipe's 2 keeps the two steps short on one CPU thread.
    loaded, payload = train_tiny("1mpx", data, tmp_path / "run", "data.layout=gen1", "data.downsample=4")
    config = loaded.model.config
    assert payload["step"] == 2 and config.widths == BASE_WIDTHS and not config.use_frames
    assert config.partition_split == 2 and config.num_classes == 3
    assert loaded.dataset["benchmark"] == "1mpx" and loaded.classes == ["pedestrian", "two-wheeler", "car"]
    assert loaded.spec.size == (320, 180) and loaded.spec.time_norm == "events"
    # the checkpoint's specification (what eval, export and demo read) carries the recipe's downscale rule
    assert loaded.spec.geometry.event_downscale == "nearest_exact" and loaded.spec.geometry.samples_events
    assert payload["config"]["optim"]["lr"] == pytest.approx(3.46e-4)


def test_1mpx_recipe_trains_on_rvt_preprocessed_1mpx(tmp_path):
    # RVT's gen4 windows are stored at 640x360: the recipe's downsample 2 is what they already have.
    _rvt_folder(tmp_path / "rvt", "seq_a", 360, 640, np.arange(1, 13) * 50_000, [5, 7, 9, 11])
    loaded, _ = train_tiny("1mpx", tmp_path / "rvt", tmp_path / "run", "data.train_split=test")
    assert loaded.dataset["layout"] == "rvt" and loaded.dataset["benchmark"] == "1mpx"
    assert loaded.spec.size == (640, 360) and loaded.model.config.widths == BASE_WIDTHS
    assert loaded.spec.geometry.event_downscale == "nearest_exact"  # what RVT's stored windows are


def test_1mpx_recipe_inputs_of_a_prophesee_recording_are_rvts_histograms_bit_for_bit(tmp_path):
    """The recipe's dataset and input specification (as the trainer builds them) turn a real 1280x720 recording,
    written as a Prophesee 1 Mpx tree, into the histograms RVT's preprocessing stored for it."""
    fixture = np.load(GEN4)
    events = np.zeros(len(fixture["t"]), EVENT_DTYPE)
    for name in "txyp":
        events[name] = fixture[name]
    (tmp_path / "train").mkdir()
    write_dat(tmp_path / "train" / "rec_td.dat", events, 1280, 720)
    write_boxes(tmp_path / "train" / "rec_bbox.npy", np.zeros(0, BOX_DTYPE))
    config = load_train_config(preset="1mpx")
    data = config.data
    dataset = open_dataset(tmp_path, "train", data.layout, data.benchmark, data.downsample, data.event_downscale)
    try:
        assert (dataset.layout, dataset.benchmark.name) == ("gen1", "1mpx")
        spec = training_input_spec(config, dataset, dual_windows=False)
        for window_ms in (50, 20):
            ends, want = fixture[f"ends_us_{window_ms}ms"], fixture[f"hist_{window_ms}ms"]
            assert want.any()
            got = dataset.sequences[0].model_inputs(spec.replace(window_us=window_ms * 1000), ends - window_ms * 1000,
                                                    ends)
            np.testing.assert_array_equal(got, want)
        binned = dataset.sequences[0].model_inputs(
            spec.replace(geometry=dataclasses.replace(spec.geometry, event_downscale="bin")), ends - 20_000, ends)
        assert not np.array_equal(binned, want)  # the rule matters on this recording
    finally:
        dataset.close()


def test_data_event_downscale_refuses_unknown_rules_and_contradicting_rvt_data(tmp_path, capsys):
    with pytest.raises(ConfigError, match="data.event_downscale .*'area'") as error:
        load_train_config(preset="1mpx", overrides=["data.event_downscale=area"])
    assert "\n" not in str(error.value)
    _rvt_folder(tmp_path / "rvt", "seq_a", 360, 640, np.arange(1, 13) * 50_000, [5, 7, 9, 11])
    capsys.readouterr()
    assert main(["train", "--preset", "1mpx", "--data", str(tmp_path / "rvt"), "--out", str(tmp_path / "run"),
                 *TINY, "data.train_split=test", "data.event_downscale=bin"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "data.event_downscale 'bin' cannot change that" in message


def test_dsec_det_recipe_trains_fusion_with_dual_windows_on_a_dsec_det_root(tmp_path):
    data = tmp_path / "dsec"
    assert main(["synth", "--out", str(data), "--preset", "dsec", "--size", "640x480", "--sequences", "1",
                 "--duration", "0.3", "--split", "1,0,0", "--workers", "1", "--seed", "0"]) == 0
    # Read it as a DSEC-Det download (its dataset.yaml would make it 'synthetic'); the split file names its one
    # sequence the way dsec-det's own file names the real ones.
    (data / "train_val_test_split.yaml").write_text("train: [synth_000]\nval: []\ntest: []\n")
    loaded, payload = train_tiny("dsec-det", data, tmp_path / "run", "data.layout=dsec")
    config = loaded.model.config
    assert payload["step"] == 2 and config.widths == BASE_WIDTHS
    assert config.use_frames and config.use_events and config.frame_backbone == "resnet50"
    assert config.dual_windows and loaded.spec.dual_windows
    assert loaded.dataset["benchmark"] == "dsec2" and loaded.spec.size == (320, 215)  # top 430 rows, halved
    assert any((tmp_path / "run" / "cache").glob("*.npy"))  # cache: disk
    recipe = payload["config"]
    assert recipe["optim"]["weight_decay"] == pytest.approx(1e-3) and recipe["fal"]["student"]["lr"] == pytest.approx(5e-5)


def test_flextune_presets_hold_flexevents_numbers():
    """flextune-teacher / flextune-balanced are FlexEvent's 2class_teacher / 2class_balanced, and dsec-det its
    Global recipe (config/train.yaml: 50000 steps, zoom prob 0.8 split 8 : 2; 2-class student: 600 steps)."""
    teacher = load_train_config(preset="flextune-teacher")
    assert (teacher.optim.steps, teacher.optim.lr, teacher.optim.weight_decay) == (50000, 2e-4, 1e-3)
    assert (teacher.data.rates_hz, teacher.data.labels, teacher.data.clip_steps) == ([40.0], "sparse", 22)
    student = load_train_config(preset="flextune-balanced")
    assert (student.optim.steps, student.optim.lr, student.data.labels, student.data.clip_align) == (600, 5e-5, "pseudo", 2)
    assert student.data.rates_hz == [40.0] and student.fal.rule == "flextune" and student.fal.student.steps == 600
    assert (student.fal.student.box_weight, student.fal.student.background_weight, student.fal.student.loss_weight) \
        == (0.15, 0.015, 0.65)
    dsec = load_train_config(preset="dsec-det")
    assert dsec.optim.steps == 50000 and dsec.fal.student.steps == 600
    assert (dsec.augment.zoom_in_prob, dsec.augment.zoom_out_prob) == pytest.approx((0.64, 0.16))
    for config in (teacher, student, dsec):
        assert (config.data.batch_size, config.optim.warmup_pct, config.optim.final_div) == (8, 0.01, 1e4)


def test_flextune_chain_of_presets_on_a_dsec_det_root(tmp_path):
    """FlexEvent's chain with the presets, two steps each: teacher -> `pseudo-label --rule flextune` -> student
    from the teacher (--init), reading the FlexTune labels at the 40 Hz midpoints."""
    data = tmp_path / "dsec"
    assert main(["synth", "--out", str(data), "--preset", "dsec", "--size", "640x480", "--sequences", "1",
                 "--duration", "0.3", "--split", "1,0,0", "--workers", "1", "--seed", "0"]) == 0
    (data / "train_val_test_split.yaml").write_text("train: [synth_000]\nval: []\ntest: []\n")
    teacher, payload = train_tiny("flextune-teacher", data, tmp_path / "teacher", "data.layout=dsec")
    assert payload["config"]["data"]["labels"] == "sparse" and teacher.spec.window_us == 25_000
    checkpoint = tmp_path / "teacher" / "checkpoints" / "last.pt"
    assert main(["pseudo-label", str(checkpoint), "--data", str(data), "--rule", "flextune", "--no-progress"]) == 0
    assert (data / "train" / "synth_000" / "object_detections" / "left" / "pseudo_tracks.npy").is_file()
    assert main(["train", "--preset", "flextune-balanced", "--init", str(checkpoint), "--data", str(data), "--out",
                 str(tmp_path / "student"), *TINY, "data.layout=dsec"]) == 0
    recipe = read_training_checkpoint(tmp_path / "student" / "checkpoints" / "last.pt")["config"]
    assert recipe["model"]["init"] == str(checkpoint) and recipe["data"]["labels"] == "pseudo"
    assert recipe["optim"]["lr"] == pytest.approx(5e-5) and recipe["fal"]["rule"] == "flextune"
