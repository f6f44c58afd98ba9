"""The simulator: determinism, boxes vs rendered masks, sensor physics against hand-computed cases,
occlusion against a numpy reference, and round trips of the written datasets through the readers."""

from __future__ import annotations

import math

import cv2
import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
import pytest
import yaml

from flexdet.config import apply_overrides
from flexdet.data.synthetic import (
    EventSensor,
    Scene,
    SynthConfig,
    generate_dataset,
    load_preset,
    simulate_sequence,
)
from flexdet.data.synthetic.config import SensorConfig
from flexdet.data.synthetic.dataset import DSEC_CLASS_IDS, plan_sequences
from flexdet.errors import ConfigError, FlexdetError


def small_config(**overrides) -> SynthConfig:
    """A short, small but busy scene: two to three objects, both classes, moving camera."""
    base = {"scene.width": 96, "scene.height": 72, "scene.duration_s": 0.4, "scene.objects.count": [2, 3],
            "scene.motion.speed_px_s": [20.0, 60.0], "frames.blur_subframes": 2, "dataset.sequences": 2,
            "dataset.split": [0.5, 0.5, 0.0], "dataset.workers": 1}
    base.update(overrides)
    return apply_overrides(load_preset("quickstart"), base)


@pytest.fixture(scope="module")
def sequence():
    return simulate_sequence(small_config(), seed=7)


def test_same_seed_gives_identical_arrays_and_other_seed_differs(sequence):
    again = simulate_sequence(small_config(), seed=7)
    for name in ("events", "frames", "frame_times", "labels", "dense_labels", "dense_visibility"):
        assert np.array_equal(getattr(sequence, name), getattr(again, name)), name
    other = simulate_sequence(small_config(), seed=8)
    assert not np.array_equal(sequence.frames, other.frames)
    assert len(sequence.events) != len(other.events) or not np.array_equal(sequence.events, other.events)


def test_events_are_sorted_in_range_and_both_polarities(sequence):
    events = sequence.events
    assert len(events) > 300
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["t"][0] >= 0 and events["t"][-1] <= 400_000
    assert events["x"].max() < 96 and events["y"].max() < 72
    assert 0.2 < events["p"].mean() < 0.8


def test_boxes_agree_with_rendered_object_masks(sequence):
    scene = sequence.scene
    checked = 0
    for t_s in np.linspace(0.0, 0.4, 9):
        boxes = scene.boxes(t_s)
        for box, mask in zip(boxes, scene.masks(t_s)):
            ys, xs = np.nonzero(mask)
            if len(xs) < 30 or xs.min() == 0 or ys.min() == 0 or xs.max() == 95 or ys.max() == 71:
                continue  # only objects fully inside the frame: their amodal box is the mask's box
            reference = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
            assert np.abs(box - reference).max() <= 1.0, (t_s, box, reference)
            checked += 1
    assert checked >= 5


def test_visibility_matches_numpy_reference_from_masks():
    config = small_config(**{"scene.objects.count": [4, 4]})
    partial = 0
    for seed in range(3):
        scene = Scene(config.scene, seed)
        for t_s in np.linspace(0.0, 0.4, 5):
            masks = scene.masks(t_s)  # back to front
            own, visible = scene.coverage(t_s)
            for k in range(len(masks)):
                in_front = masks[k + 1:].any(axis=0)
                assert own[k] == masks[k].sum()
                assert visible[k] == (masks[k] & ~in_front).sum()
                partial += int(0 < visible[k] < own[k])
    assert partial > 0  # some objects were really occluded


def test_labelled_objects_follow_the_visibility_and_size_rule():
    from flexdet.data.synthetic.simulate import ground_truth

    config = small_config(**{"scene.objects.count": [4, 4], "labels.min_visibility": 0.5})
    scene = Scene(config.scene, 1)
    times = np.arange(0, 400_001, 50_000)
    boxes, visibility = ground_truth(scene, times, config.labels)
    for t in times:
        own, visible = scene.coverage(t * 1e-6)
        fraction = visible / np.maximum(own, 1)
        clipped = np.clip(scene.boxes(t * 1e-6), 0, [96, 72, 96, 72])
        size_ok = np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]) >= 4
        expected = np.flatnonzero((visible > 0) & (fraction >= 0.5) & size_ok)
        rows = boxes["t"] == t
        assert boxes["track_id"][rows].tolist() == expected.tolist()
        assert np.allclose(visibility[rows], fraction[expected])


def test_labels_are_dense_labels_at_frame_times_and_clipped(sequence):
    assert np.array_equal(sequence.label_times, sequence.frame_times)
    dense = sequence.dense_labels
    assert np.array_equal(np.unique(dense["t"]) % 1000, np.zeros(len(np.unique(dense["t"])), np.int64))
    for t in sequence.label_times:
        assert np.array_equal(sequence.labels[sequence.labels["t"] == t], dense[dense["t"] == t])
    assert np.all(dense["x"] >= 0) and np.all(dense["x"] + dense["w"] <= 96 + 1e-4)
    assert np.all(dense["y"] >= 0) and np.all(dense["y"] + dense["h"] <= 72 + 1e-4)
    assert np.all(dense["w"] >= 4) and np.all(dense["h"] >= 4)
    assert np.all((sequence.dense_visibility > 0) & (sequence.dense_visibility <= 1))


def test_classes_look_different_cars_wide_pedestrians_tall():
    config = small_config(**{"scene.objects.count": [4, 4], "scene.duration_s": 0.05})
    aspects = {"car": [], "pedestrian": []}
    for seed in range(4):
        scene = Scene(config.scene, seed)
        for obj, box in zip(scene.objects, scene.boxes(0.0)):
            aspects[obj.class_name].append((box[2] - box[0]) / (box[3] - box[1]))
    assert min(aspects["car"]) > 1.4 and max(aspects["pedestrian"]) < 0.6


def _ramp_sensor(threshold: float, refractory_us: int) -> EventSensor:
    config = SensorConfig(threshold_mean=threshold, threshold_std=0.0, refractory_us=refractory_us, log_eps=0.0,
                          noise_rate_hz=0.0)
    return EventSensor(1, 1, config, seed=0)


def test_crossing_times_are_linearly_interpolated():
    sensor = _ramp_sensor(0.25, 0)
    sensor.reset(np.full((1, 1), 1.0), 0)
    events = sensor.step(np.full((1, 1), math.exp(1.00001)), 1000, noise=False)  # log 0 -> 1 in 1 ms
    assert events["t"].tolist() == [250, 500, 750, 1000]
    assert events["p"].tolist() == [1] * 4
    events = sensor.step(np.full((1, 1), math.exp(0.49998)), 2000, noise=False)  # log 1 -> 0.5 in 1 ms
    assert events["t"].tolist() == [1500, 2000] and events["p"].tolist() == [0, 0]


def test_refractory_period_drops_events_too_close_in_time():
    sensor = _ramp_sensor(0.25, 300)
    sensor.reset(np.full((1, 1), 1.0), 0)
    events = sensor.step(np.full((1, 1), math.exp(1.00001)), 1000, noise=False)
    assert events["t"].tolist() == [250, 750]


def test_brightening_square_gives_on_events_inside_and_darkening_off():
    config = SensorConfig(noise_rate_hz=0.0)
    sensor = EventSensor(40, 30, config, seed=1)
    dark = np.full((30, 40), 0.2, np.float32)
    bright = dark.copy()
    bright[10:20, 12:24] = 0.6
    sensor.reset(dark, 0)
    on = sensor.step(bright, 10_000, noise=False)
    inside = (on["x"] >= 12) & (on["x"] < 24) & (on["y"] >= 10) & (on["y"] < 20)
    assert len(on) > 0 and inside.all() and (on["p"] == 1).all()
    # Independent count: each pixel emits floor(log change / its own ON threshold) events.
    change = np.log(0.6 + config.log_eps) - np.log(0.2 + config.log_eps)
    assert len(on) == int(np.floor(change / sensor.c_on[10:20, 12:24]).sum())
    off = sensor.step(dark, 20_000, noise=False)
    assert len(off) > 0 and (off["p"] == 0).all()
    assert ((off["x"] >= 12) & (off["x"] < 24) & (off["y"] >= 10) & (off["y"] < 20)).all()


def test_static_scene_gives_no_events_without_noise_and_poisson_noise_with_it():
    still = {"scene.motion.speed_px_s": [0.0, 0.0], "scene.motion.scale_rate": 0.0,
             "scene.camera.pan_speed_px_s": 0.0, "scene.camera.zoom_rate": 0.0, "scene.objects.p_enter": 0.0,
             "sensor.hot_pixel_fraction": 0.0}
    silent = simulate_sequence(small_config(**still, **{"sensor.noise_rate_hz": 0.0}), seed=5)
    assert len(silent.events) == 0
    assert len(silent.dense_labels) > 0  # stopped objects are still labelled (the RGB frame sees them)
    rate = 20.0
    noisy = simulate_sequence(small_config(**still, **{"sensor.noise_rate_hz": rate}), seed=5)
    expected = rate * 96 * 72 * 0.4
    assert abs(len(noisy.events) - expected) < 5 * math.sqrt(expected)


def test_sensor_rejects_wrong_image_shape():
    sensor = EventSensor(10, 8, SensorConfig(), seed=0)
    with pytest.raises(FlexdetError, match="does not match"):
        sensor.reset(np.zeros((9, 10)), 0)


def test_bad_config_values_raise_config_error():
    with pytest.raises(ConfigError, match="divide"):
        apply_overrides(SynthConfig(), {"labels.rate_hz": 7.0})
    with pytest.raises(ConfigError, match="classes"):
        apply_overrides(SynthConfig(), {"scene.objects.classes": ["bus"]})
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("nope")


@pytest.fixture(scope="module")
def dsec_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("dsec")
    config = small_config()
    generate_dataset(out, config)
    return out, config


def _independent_ms_to_idx(t_relative: np.ndarray) -> np.ndarray:
    """Plain-loop reference: for each ms, the first index with t >= ms * 1000."""
    result, i = [], 0
    for ms in range(int(t_relative[-1]) // 1000 + 2):
        while i < len(t_relative) and t_relative[i] < ms * 1000:
            i += 1
        result.append(i)
    return np.array(result)


def test_dsec_layout_files_match_the_simulation(dsec_dataset):
    out, config = dsec_dataset
    manifest = yaml.safe_load((out / "dataset.yaml").read_text())
    assert manifest["layout"] == "dsec" and manifest["classes"] == {0: "pedestrian", 2: "car"}
    assert (manifest["width"], manifest["height"]) == (96, 72)
    plans = plan_sequences(config)
    assert manifest["splits"] == {"train": ["synth_000"], "val": ["synth_001"], "test": []}
    for plan in plans:
        root = out / plan.folder / plan.name
        sequence = simulate_sequence(config, plan.seed)
        with h5py.File(root / "events" / "left" / "events.h5", "r") as f:
            t_offset = int(f["t_offset"][()])
            t = f["events/t"][:].astype(np.int64)
            assert np.array_equal(t, sequence.events["t"])  # stored relative to t_offset
            assert np.array_equal(f["events/x"][:], sequence.events["x"])
            assert np.array_equal(f["events/p"][:], sequence.events["p"])
            assert np.array_equal(f["ms_to_idx"][:], _independent_ms_to_idx(t))
        assert t_offset == plan.t_offset and t_offset > 10**15
        stamps = np.loadtxt(root / "images" / "timestamps.txt", dtype=np.int64)
        assert np.array_equal(stamps, sequence.frame_times + t_offset)
        pngs = sorted((root / "images" / "left" / "distorted").glob("*.png"))
        assert len(pngs) == len(stamps)
        assert np.array_equal(cv2.imread(str(pngs[3]))[..., ::-1], sequence.frames[3])  # stored BGR
        tracks = np.load(root / "object_detections" / "left" / "tracks.npy")
        assert np.array_equal(tracks["t"], sequence.labels["t"] + t_offset)
        names = np.array(["car", "pedestrian"])[sequence.labels["class_id"]]
        assert np.array_equal(tracks["class_id"], [DSEC_CLASS_IDS[n] for n in names])
        dense = np.load(root / "object_detections" / "left" / "dense_tracks.npy")
        visibility = np.load(root / "object_detections" / "left" / "dense_visibility.npy")
        assert len(dense) == len(visibility) == len(sequence.dense_labels)
        assert np.array_equal(dense["x"], sequence.dense_labels["x"])


def test_dsec_round_trip_through_flexdet_readers(dsec_dataset):
    readers = pytest.importorskip("flexdet.data.readers")
    labels = pytest.importorskip("flexdet.data.labels")
    out, config = dsec_dataset
    plan = plan_sequences(config)[0]
    root = out / plan.folder / plan.name
    sequence = simulate_sequence(config, plan.seed)
    events = readers.read_events(root / "events" / "left" / "events.h5")
    assert np.array_equal(events["t"], sequence.events["t"] + plan.t_offset)
    assert np.array_equal(events["x"], sequence.events["x"]) and np.array_equal(events["y"], sequence.events["y"])
    with readers.open_recording(root) as recording:
        assert (recording.width, recording.height) == (96, 72)
        window = recording.read(plan.t_offset + 100_000, plan.t_offset + 200_000)
        reference = sequence.events[(sequence.events["t"] >= 100_000) & (sequence.events["t"] < 200_000)]
        assert np.array_equal(window["t"] - plan.t_offset, reference["t"])
    boxes = labels.read_boxes(root / "object_detections" / "left" / "tracks.npy")
    assert np.array_equal(boxes["t"], sequence.labels["t"] + plan.t_offset)
    assert np.allclose(boxes["w"], sequence.labels["w"])


def test_generation_is_byte_identical_and_resumes(dsec_dataset, tmp_path):
    out, config = dsec_dataset
    again = tmp_path / "again"
    generate_dataset(again, config)
    for name in ("events/left/events.h5", "object_detections/left/tracks.npy",
                 "object_detections/left/dense_tracks.npy", "images/left/distorted/000002.png"):
        for plan in plan_sequences(config):
            first = (out / plan.folder / plan.name / name).read_bytes()
            assert first == (again / plan.folder / plan.name / name).read_bytes(), name
    with pytest.raises(ConfigError, match="different configuration"):
        generate_dataset(again, small_config(**{"dataset.seed": 99}))


def test_gen1_layout_decodes_with_plain_numpy(tmp_path):
    config = small_config(**{"dataset.layout": "gen1", "dataset.sequences": 1, "dataset.split": [1.0, 0.0, 0.0]})
    generate_dataset(tmp_path, config)
    plan = plan_sequences(config)[0]
    sequence = simulate_sequence(config, plan.seed)
    raw = (tmp_path / "train" / f"{plan.name}_td.dat").read_bytes()
    body_start = raw.index(b"% end\n") + len(b"% end\n") + 2
    records = np.frombuffer(raw[body_start:], dtype=[("t", "<u4"), ("data", "<u4")])
    assert np.array_equal(records["t"], sequence.events["t"])
    assert np.array_equal(records["data"] & 0x3FFF, sequence.events["x"])
    assert np.array_equal((records["data"] >> 14) & 0x3FFF, sequence.events["y"])
    assert np.array_equal((records["data"] >> 28) & 1, sequence.events["p"])
    boxes = np.load(tmp_path / "train" / f"{plan.name}_bbox.npy")
    assert boxes.dtype.names == ("ts", "x", "y", "w", "h", "class_id", "confidence", "track_id")
    assert np.array_equal(boxes["ts"], sequence.labels["t"])
    assert np.array_equal(boxes["class_id"], sequence.labels["class_id"])  # gen1: car 0, pedestrian 1
    assert yaml.safe_load((tmp_path / "dataset.yaml").read_text())["classes"] == {0: "car", 1: "pedestrian"}


def test_cli_synth_writes_a_dataset_and_reports_bad_options(tmp_path, capsys):
    from flexdet.cli import main

    args = ["synth", "--out", str(tmp_path / "d"), "--sequences", "1", "--duration", "0.2", "--size", "64x48",
            "--seed", "3", "--split", "1,0,0", "--workers", "1", "--preview", str(tmp_path / "p.png")]
    assert main(args) == 0
    assert (tmp_path / "d" / "train" / "synth_000" / "events" / "left" / "events.h5").is_file()
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["synth", "--out", str(tmp_path / "e"), "--size", "64by48"]) == 2
    assert "WxH" in capsys.readouterr().err


def test_presets_load_and_quickstart_is_small():
    for name in ("quickstart", "dsec", "gen1"):
        for difficulty in (None, "easy", "medium", "hard"):
            load_preset(name, difficulty)
    quick = load_preset("quickstart")
    assert quick.scene.width * quick.scene.height <= 320 * 240
    assert quick.dataset.sequences * quick.scene.duration_s <= 120


def test_synth_errors_carry_one_prefix(tmp_path, capsys):
    """"flexdet synth: error: synth: unknown preset" said its command twice; the message names the setting."""
    from flexdet.cli import main

    for argv, said in ((["--preset", "nope"], "unknown preset 'nope' (a synthetic scene): shipped are dsec, "),
                       (["--preset", str(tmp_path / "mine.yaml")], "mine.yaml: no such synthetic scene file"),
                       (["--duration", "0"], "scene.duration_s (--duration) must be positive"),
                       (["--difficulty", "easy", "--layout", "gen1", "--classes", "bus"], "scene.objects.classes")):
        assert main(["synth", "--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("flexdet synth: error: ") and err[0].count("synth:") == 1, err
        assert said in err[0]


def test_too_few_sequences_for_the_preset_split_fill_train_then_test(tmp_path, capsys):
    """`flexdet synth --sequences 1` was refused (its val and test splits empty) where a user wants a sample:
    the sequence goes to train (what `flexdet train` reads), a second one to test (what `flexdet eval` scores),
    said on stderr; an explicit --split is still held to (test_newcomer's refusal)."""
    from flexdet.cli import main
    from flexdet.data.synthetic.dataset import filled_split

    assert filled_split(1, [0.7, 0.15, 0.15]) == [1.0, 0.0, 0.0]
    assert filled_split(2, [0.7, 0.15, 0.15]) == [1.0, 0.0, 1.0]
    assert filled_split(3, [0.7, 0.15, 0.15]) == [1.0, 1.0, 1.0]  # 0.7/0.15/0.15 of 3 left test empty
    assert filled_split(20, [0.7, 0.15, 0.15]) is None and filled_split(1, [0.0, 0.0, 1.0]) is None
    small = ["--duration", "0.2", "--size", "64x48", "--workers", "1"]
    for count, splits in ((1, {"train": 1}), (2, {"train": 1, "test": 1})):
        out = tmp_path / f"n{count}"
        assert main(["synth", "--out", str(out), "--sequences", str(count), *small]) == 0
        notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
        assert len(notes) == 1 and "1 in train" in notes[0] and "none in val" in notes[0]
        assert ("--split train" in notes[0]) == (count == 1)
        written = yaml.safe_load((out / "dataset.yaml").read_text())["splits"]
        assert {split: len(names) for split, names in written.items() if names} == splits
        assert len(list((out / "train").iterdir())) == 1
