"""DSEC-Det's split as dsec-det applies it (val inside train/, names from its split file), and synthetic
datasets written in the layouts the official tools read as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from flexdet.datasets.dsec_split import SHIPPED_SPLIT, dsec_folders, split_names
from flexdet.errors import ConfigError

PEER_SPLIT = Path("../shared/data/peers/dsec_det_split.yaml")


def _sequence(folder: Path) -> None:
    (folder / "events" / "left").mkdir(parents=True)
    (folder / "events" / "left" / "events.h5").write_bytes(b"")


def test_shipped_names_are_dsec_det_s_split_file():
    if not PEER_SPLIT.is_file():
        pytest.skip("peer fixtures not available")
    official = yaml.safe_load(PEER_SPLIT.read_text())
    assert yaml.safe_load(SHIPPED_SPLIT.read_text()) == official
    names = split_names()
    assert {split: list(names[split]) for split in names} == official
    assert len(names["train"]) == 41 and len(names["val"]) == 6 and len(names["test"]) == 13
    assert not set(names["train"]) & set(names["val"]) and not set(names["val"]) & set(names["test"])


def test_official_root_splits_as_the_split_file_says(tmp_path):
    # The download: every train and val sequence under train/, the test ones under test/, plus a stray
    # folder that no split names.
    names = split_names()
    for name in names["train"] + names["val"]:
        _sequence(tmp_path / "train" / name)
    for name in names["test"]:
        _sequence(tmp_path / "test" / name)
    _sequence(tmp_path / "train" / "not_in_any_split")
    found = {split: [p.name for p in dsec_folders(tmp_path, split)] for split in ("train", "val", "test")}
    assert found["train"] == sorted(names["train"])
    assert found["val"] == sorted(names["val"])  # zurich_city_16_a ... 21_a, taken from train/
    assert found["test"] == sorted(names["test"])
    assert all(p.parent.name == "train" for p in dsec_folders(tmp_path, "val"))
    assert not set(found["train"]) & set(found["val"])  # no validation sequence leaks into training


def test_flat_root_and_a_root_split_file(tmp_path):
    for name in ("zurich_city_00_a", "zurich_city_16_a", "thun_01_a", "my_own_recording"):
        _sequence(tmp_path / name)
    (tmp_path / "train_val_test_split.yaml").write_text(
        "train: [zurich_city_00_a]\nval: [zurich_city_16_a]\ntest: [thun_01_a]\n")
    assert [p.name for p in dsec_folders(tmp_path, "train")] == ["zurich_city_00_a"]
    assert [p.name for p in dsec_folders(tmp_path, "val")] == ["zurich_city_16_a"]
    assert [p.name for p in dsec_folders(tmp_path, "test")] == ["thun_01_a"]
    (tmp_path / "train_val_test_split.yaml").write_text(
        "train: [my_own_recording]\nval: [zurich_city_00_a]\ntest: [thun_01_a]\n")
    assert [p.name for p in dsec_folders(tmp_path, "train")] == ["my_own_recording"]
    assert [p.name for p in dsec_folders(tmp_path, "val")] == ["zurich_city_00_a"]


def test_training_refuses_split_sequences_missing_from_the_folder_as_the_scorer_does(tmp_path):
    from flexdet.datasets import open_dataset
    from flexdet.datasets.sequences import label_files

    # The shipped split names 41 train sequences; this folder holds two of them and a stray one.
    for name in ("zurich_city_00_a", "zurich_city_01_a", "my_own_recording"):
        _sequence(tmp_path / "train" / name)
        (tmp_path / "train" / name / "object_detections" / "left").mkdir(parents=True)
        np.save(tmp_path / "train" / name / "object_detections" / "left" / "tracks.npy", np.zeros(0, [("t", "<u8")]))
    missing = sorted(set(split_names()["train"]) - {"zurich_city_00_a", "zurich_city_01_a"})
    errors = []
    for call in (lambda: dsec_folders(tmp_path, "train"), lambda: open_dataset(tmp_path, "train", layout="dsec"),
                 lambda: label_files(tmp_path, "train")):
        with pytest.raises(ConfigError) as info:
            call()
        errors.append(str(info.value))
        assert str(SHIPPED_SPLIT) in errors[-1] and f"{len(missing)} have no" in errors[-1], errors[-1]
        assert ", ".join(missing[:5]) in errors[-1], errors[-1]
    assert errors[0] == errors[1]  # training and evaluation open the split by one rule
    assert errors[2] == errors[0].replace("events/left/events.h5", "object_detections/left/tracks.npy")
    # Naming the sequences one has in the root's split file is the way out.
    (tmp_path / "train_val_test_split.yaml").write_text(
        "train: [zurich_city_00_a, zurich_city_01_a]\nval: []\ntest: []\n")
    assert [p.name for p in dsec_folders(tmp_path, "train")] == ["zurich_city_00_a", "zurich_city_01_a"]
    assert list(label_files(tmp_path, "train").files) == ["zurich_city_00_a", "zurich_city_01_a"]


def test_missing_split_sequences_and_bad_split_names_raise(tmp_path):
    _sequence(tmp_path / "train" / "zurich_city_00_a")
    with pytest.raises(ConfigError, match="val.*train/"):
        dsec_folders(tmp_path, "val")
    with pytest.raises(ConfigError, match="split must be one of"):
        dsec_folders(tmp_path, "validation")


def test_synthetic_dsec_keeps_val_in_train_and_opens_by_split(tmp_path):
    from test_synthetic import small_config

    from flexdet.data.synthetic import generate_dataset
    from flexdet.datasets import open_dataset

    config = small_config(**{"dataset.sequences": 3, "dataset.split": [0.34, 0.33, 0.33]})
    generate_dataset(tmp_path, config)
    manifest = yaml.safe_load((tmp_path / "dataset.yaml").read_text())
    assert manifest["splits"] == {"train": ["synth_000"], "val": ["synth_001"], "test": ["synth_002"]}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")) == \
        ["test", "train"]
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["synth_000", "synth_001"]
    for split, expected in (("train", "synth_000"), ("val", "synth_001"), ("test", "synth_002")):
        dataset = open_dataset(tmp_path, split)
        assert [s.name for s in dataset.sequences] == [expected]
        assert dataset.sequences[0].dense is not None
        dataset.close()


def test_synthetic_gen1_split_folders_hold_only_what_rvt_preprocessing_reads(tmp_path):
    from test_synthetic import small_config

    from flexdet.data.synthetic import generate_dataset
    from flexdet.datasets import open_dataset

    generate_dataset(tmp_path, small_config(**{"dataset.layout": "gen1", "dataset.sequences": 1,
                                               "dataset.split": [1.0, 0.0, 0.0]}))
    # RVT's preprocessing takes the one *.npy of a split folder for the labels of its one *_td.dat.
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["synth_000_bbox.npy", "synth_000_td.dat"]
    dense = tmp_path / "dense_labels" / "train"
    assert sorted(p.name for p in dense.iterdir()) == ["synth_000_dense.npy", "synth_000_dense_visibility.npy"]
    dataset = open_dataset(tmp_path, "train")
    sequence = dataset.sequences[0]
    assert sequence.dense is not None
    assert np.array_equal(sequence.dense.boxes["t"], np.load(dense / "synth_000_dense.npy")["ts"])
    dataset.close()
