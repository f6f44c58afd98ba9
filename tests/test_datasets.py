"""Training data: synthetic DSEC and Gen1 layouts, real-DSEC split, geometry, clips, augmentation, frame rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from flexdet.config import apply_overrides
from flexdet.data.events import make_events
from flexdet.data.synthetic import generate_dataset, load_preset
from flexdet.datasets import WindowCache, get_benchmark, open_dataset, stream_windows
from flexdet.datasets.sequences import _dsec_folders
from flexdet.errors import ConfigError
from flexdet.training.augment import ClipAugment, augment_boxes, augment_images
from flexdet.training.clips import ClipLoader, ClipSampler
from flexdet.training.config import AugmentConfig

SMALL = {"scene.width": 96, "scene.height": 64, "scene.duration_s": 0.6, "dataset.sequences": 3,
         "dataset.split": [0.34, 0.33, 0.33], "dataset.workers": 1}


def tiny_dataset(root: Path, layout: str = "dsec") -> Path:
    config = apply_overrides(load_preset("quickstart"), {**SMALL, "dataset.layout": layout})
    return generate_dataset(root, config)


@pytest.fixture(scope="module")
def dsec_root(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("synth_dsec"))


def test_synthetic_dsec_sequences_and_protocol(dsec_root):
    dataset = open_dataset(dsec_root, "train")
    assert dataset.layout == "synthetic" and dataset.has_frames
    assert dataset.benchmark.class_names == ("pedestrian", "car")  # file ids 0, 2 -> 0, 1
    sequence = dataset.sequences[0]
    assert sequence.start_us == int(sequence.frame_times[0])
    # Dense ground truth at a label instant equals the sparse label file's boxes there.
    t = int(sequence.labels["t"][3])
    dense = np.sort(sequence.ground_truth(t), order="track_id")
    sparse = np.sort(sequence.labels[sequence.labels["t"] == t], order="track_id")
    np.testing.assert_allclose(dense["x"], sparse["x"], atol=1e-4)
    assert dense["class_id"].tolist() == sparse["class_id"].tolist()


def test_stream_histograms_match_independent_count(dsec_root):
    dataset = open_dataset(dsec_root, "train", downsample=2)
    sequence = dataset.sequences[0]
    geometry = dataset.geometry
    assert geometry.size == (48, 32)
    starts, ends = stream_windows(sequence, 60)
    assert np.array_equal(starts[1:], ends[:-1]) and ends[0] - starts[0] in (16666, 16667)
    cache = WindowCache(dataset.input_spec(bins=10))
    hist = cache.inputs(sequence, 60, np.arange(3))
    events = sequence.recording().read(int(starts[2]), int(ends[2]))
    expected = np.zeros((20, 32, 48), np.int64)
    span = int(ends[2] - starts[2])
    bins = (events["t"] - starts[2]) * 10 // span
    np.add.at(expected, (events["p"].astype(int) * 10 + bins, events["y"] // 2, events["x"] // 2), 1)
    assert np.array_equal(hist[2], np.minimum(expected, 10))


def test_latest_before_end_pairs_the_freshest_frame_before_the_window_end(dsec_root):
    dataset = open_dataset(dsec_root, "train")
    times = dataset.sequences[0].frame_times
    spec = dataclasses.replace(dataset.input_spec(), frame_rule="latest_before_end")
    dataset.close()
    # a window ending on a frame instant keeps the frame at its start (the one training pairs), a window ending
    # between frames gets the latest delivered before its end, never one at or after it
    assert spec.frame_index(times, int(times[1]), int(times[2])) == 1
    assert spec.frame_index(times, int(times[1]) + 30_000, int(times[2]) + 30_000) == 2
    assert spec.frame_index(times, int(times[2]) - 1, int(times[3]) - 1) == 2
    assert spec.frame_index(times, int(times[0]) - 50_000, int(times[0])) == -1
    assert dataclasses.replace(spec, frame_rule="latest_at_start").frame_index(
        times, int(times[1]) + 30_000, int(times[2]) + 30_000) == 1


def test_the_recipe_chooses_the_frame_rule(dsec_root):
    from flexdet.training.config import load_train_config
    from flexdet.training.trainer import training_input_spec

    dataset = open_dataset(dsec_root, "train")
    fresh = load_train_config(preset="quickstart", overrides=["data.frame_rule=latest_before_end"])
    assert training_input_spec(fresh, dataset, False).frame_rule == "latest_before_end"
    assert training_input_spec(load_train_config(preset="quickstart"), dataset, False).frame_rule == "latest_at_start"
    dataset.close()
    with pytest.raises(ConfigError, match="data.frame_rule"):
        load_train_config(preset="quickstart", overrides=["data.frame_rule=nearest"])


def test_frame_is_the_latest_at_window_start(dsec_root):
    dataset = open_dataset(dsec_root, "train")
    sequence = dataset.sequences[0]
    times = sequence.frame_times
    spec = dataset.input_spec()
    window = 50_000
    assert spec.frame_index(times, int(times[2]), int(times[2]) + window) == 2
    assert spec.frame_index(times, int(times[2]) - 1, int(times[2]) - 1 + window) == 1
    assert spec.frame_index(times, int(times[2]) + 40_000, int(times[2]) + 40_000 + window) == 2
    assert spec.frame_index(times, int(times[0]) - 1, int(times[0]) - 1 + window) == -1
    cache = WindowCache(spec)
    loader = ClipLoader(dataset, cache, [90.0], use_frames=True)
    starts, _ = cache.windows(sequence, 90.0)
    clip_frames = loader.load_clip(_clip(0, 0, 5, 4))[1]
    for j, start in enumerate(starts[5:9]):
        index = np.searchsorted(times, start, side="right") - 1
        expected = torch.from_numpy(cache.frames(sequence)[index]).permute(2, 0, 1).float() / 255
        assert torch.equal(clip_frames[j], expected)


def _clip(sequence, rate_index, start, steps, augment=ClipAugment()):  # noqa: B008 (frozen dataclass)
    from flexdet.training.clips import Clip
    return Clip(sequence, rate_index, start, steps, augment, True)


def test_hflip_maps_a_box_and_its_events():
    width, height = 40, 30
    events = make_events(t=np.arange(6) * 100, x=[5, 6, 7, 8, 9, 9], y=[10, 11, 12, 13, 14, 10], p=[1, 0, 1, 1, 0, 1])
    from flexdet.data.representations import stacked_histogram
    hist = torch.from_numpy(stacked_histogram(events, height, width, bins=2, t_start=0, t_end=600))[None]
    flipped = augment_images(hist, ClipAugment(flip=True), "nearest")[0]
    ys, xs = np.nonzero(flipped.sum(0).numpy())
    box = augment_boxes(np.array([[5, 10, 10, 15]], np.float32), ClipAugment(flip=True), width, height)[0]
    assert box.tolist() == [30.0, 10.0, 35.0, 15.0]  # x' = W - x, hand-computed
    assert xs.min() >= box[0] and xs.max() < box[2] and ys.min() >= box[1] and ys.max() < box[3]
    assert sorted(zip(xs.tolist(), ys.tolist())) == sorted({(width - 1 - x, y) for x, y in zip(events["x"], events["y"])})


def test_zoom_maps_events_frames_and_boxes_alike():
    """A single bright pixel and a box around it land in the same place after a zoom in, and after a zoom out."""
    width, height = 64, 48
    for augment in (ClipAugment(False, 1.5, -10.0, -6.0), ClipAugment(True, 0.8, 5.0, 3.0)):
        image = torch.zeros(1, 1, height, width)
        image[0, 0, 20, 30] = 1.0
        out = augment_images(image, augment, "nearest")[0, 0]
        ys, xs = torch.nonzero(out, as_tuple=True)
        box = augment_boxes(np.array([[30, 20, 31, 21]], np.float32), augment, width, height)[0]
        assert len(xs) >= 1
        assert xs.min() >= np.floor(box[0]) and xs.max() <= np.ceil(box[2]) - 1
        assert ys.min() >= np.floor(box[1]) and ys.max() <= np.ceil(box[3]) - 1


def test_clip_augmentation_is_the_same_for_every_step(dsec_root):
    dataset = open_dataset(dsec_root, "train")
    loader = ClipLoader(dataset, WindowCache(dataset.input_spec()), [20.0], use_frames=True)
    plain = loader.load_clip(_clip(0, 0, 2, 3))
    flipped = loader.load_clip(_clip(0, 0, 2, 3, ClipAugment(flip=True)))
    assert torch.equal(flipped[0], plain[0].flip(-1)) and torch.equal(flipped[1], plain[1].flip(-1))
    width = dataset.geometry.size[0]
    for before, after in zip(plain[2], flipped[2]):
        expected = before["boxes"].clone()
        expected[:, [0, 2]] = width - before["boxes"][:, [2, 0]]
        assert torch.allclose(after["boxes"], expected) and torch.equal(after["labels"], before["labels"])


def test_sampler_streams_continue_and_resume_exactly():
    lengths = [[20], [9], [14]]
    sampler = ClipSampler(lengths, batch_size=4, clip_steps=4, stream_fraction=0.5, augment=AugmentConfig(),
                          size=(64, 48), seed=3)
    first = [sampler.next_batch() for _ in range(3)]
    for column in range(2):
        clips = [batch[column] for batch in first]
        for previous, current in zip(clips, clips[1:]):
            if not current.reset:  # a continuing stream picks up where the last clip ended, same augmentation
                assert (current.sequence, current.start) == (previous.sequence, previous.start + 4)
                assert current.augment == previous.augment
    assert all(c.reset for batch in first for c in batch[2:])
    saved = sampler.state_dict()
    expected = [sampler.next_batch() for _ in range(4)]
    again = ClipSampler(lengths, 4, 4, 0.5, AugmentConfig(), (64, 48), seed=3)
    again.load_state_dict(saved)
    assert [again.next_batch() for _ in range(4)] == expected
    assert all(c.start + c.steps <= lengths[c.sequence][0] for batch in expected for c in batch)


def test_gen1_layout_is_event_only(tmp_path):
    root = tiny_dataset(tmp_path / "gen1", layout="gen1")
    dataset = open_dataset(root, "train")
    assert dataset.layout == "synthetic" and not dataset.has_frames
    with pytest.raises(ConfigError, match="model.inputs=events"):
        ClipLoader(dataset, WindowCache(dataset.input_spec()), [20.0], use_frames=True)
    loader = ClipLoader(dataset, WindowCache(dataset.input_spec()), [20.0], use_frames=False)
    events, frames, targets = loader.load_clip(_clip(0, 0, 0, 3))
    assert frames is None and events.shape == (3, 20, 64, 96) and all(t is not None for t in targets)


def test_real_dsec_split_and_half_resolution_geometry(tmp_path):
    for name in ("zurich_city_00_a", "zurich_city_16_a", "thun_01_a"):
        (tmp_path / name / "events" / "left").mkdir(parents=True)
        (tmp_path / name / "events" / "left" / "events.h5").write_bytes(b"")
    (tmp_path / "train_val_test_split.yaml").write_text(  # every split sequence it names must be there
        "train: [zurich_city_00_a]\nval: [zurich_city_16_a]\ntest: [thun_01_a]\n")
    assert [p.name for p in _dsec_folders(tmp_path, "train")] == ["zurich_city_00_a"]
    assert [p.name for p in _dsec_folders(tmp_path, "val")] == ["zurich_city_16_a"]
    assert [p.name for p in _dsec_folders(tmp_path, "test")] == ["thun_01_a"]
    from flexdet.data.geometry import Geometry

    benchmark = get_benchmark("dsec2")
    geometry = Geometry(*benchmark.sensor_size, benchmark.crop_height, benchmark.scale)
    assert geometry.size == (320, 215)
    events = make_events(t=[0, 1, 2], x=[639, 10, 11], y=[429, 430, 3], p=[1, 1, 0])
    moved = geometry.events(events)
    assert moved["x"].tolist() == [319, 5] and moved["y"].tolist() == [214, 1]  # row 430 is cropped away
    assert geometry.frame(np.zeros((480, 640, 3), np.uint8)).shape == (215, 320, 3)
