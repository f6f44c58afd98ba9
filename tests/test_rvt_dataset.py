"""RVT-preprocessed datasets (../shared/data/peers/rvt_preprocessed_gen1, written by RVT's own preprocessing):
streams step through exactly RVT's stored windows from where RVT's evaluation starts a sequence, label frames
are scored on their own windows, and evaluation, training and the converted RVT model run on them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from flexdet.cli import main
from flexdet.datasets import open_dataset, stream_windows
from flexdet.errors import ConfigError
from flexdet.evaluation.coco_eval import METRIC_NAMES

PEERS = Path("../shared/data/peers")
RVT_ROOT = PEERS / "rvt_preprocessed_gen1" / "rvt_output"
REPR = Path("event_representations_v2") / "stacked_histogram_dt=50_nbins=10"
CKPT, IO = PEERS / "rvt" / "rvt_random.ckpt", PEERS / "rvt" / "rvt_random_io.npz"


@pytest.fixture(autouse=True)
def _need_fixture():
    if not RVT_ROOT.is_dir():
        pytest.skip("RVT peer fixture is not available (../shared/data/peers next to the checkout)")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_streams_are_rvts_stored_windows(split):
    dataset = open_dataset(RVT_ROOT, split)
    try:
        assert (dataset.layout, dataset.benchmark.name, dataset.geometry.size) == ("rvt", "gen1", (304, 240))
        spec = dataset.input_spec(bins=10)
        assert (spec.time_norm, spec.end_inclusive) == ("events", True)  # the stored histograms' rule
        with pytest.raises(ConfigError, match="stored windows are stacked histograms"):
            dataset.input_spec(representation="voxel_grid", bins=10)
        voxel_model_spec = spec.replace(representation="voxel_grid", time_norm="window")  # a checkpoint's own
        with pytest.raises(ConfigError, match="stored windows are stacked histograms"):
            dataset.sequences[0].model_inputs(voxel_model_spec, *stream_windows(dataset.sequences[0], 20))
        for sequence in dataset.sequences:
            folder = RVT_ROOT / split / sequence.name
            stored_ends = np.load(folder / REPR / "timestamps_us.npy")
            with h5py.File(folder / REPR / "event_representations.h5", "r") as handle:
                stored = handle["data"][:]
            starts, ends = stream_windows(sequence, 20)
            # RVT's first label frame is on window 0 here, so its evaluation streams every stored window
            np.testing.assert_array_equal(ends, stored_ends)
            np.testing.assert_array_equal(starts, stored_ends - 50_000)
            np.testing.assert_array_equal(sequence.model_inputs(spec, starts, ends), stored)
            # label frames: on the windows objframe_idx_2_repr_idx names, every one labelled
            windows = np.load(folder / REPR / "objframe_idx_2_repr_idx.npy")
            frame_times = np.load(folder / "labels_v2" / "timestamps_us.npy")
            assert sequence.stored.label_steps == list(zip(frame_times.tolist(), windows.tolist()))
            assert [k for k, t in enumerate(ends) if sequence.is_labelled(int(t))] == windows.tolist()
    finally:
        dataset.close()


def _rvt_folder(root: Path, name: str, height: int, width: int, ends: np.ndarray, label_windows: list[int]) -> Path:
    """A small RVT sequence folder in RVT's layout (random histograms, one box per label frame)."""
    import hdf5plugin

    folder = root / "test" / name
    (folder / REPR).mkdir(parents=True)
    (folder / "labels_v2").mkdir()
    data = np.random.default_rng(len(ends)).integers(0, 3, (len(ends), 20, height, width), dtype=np.uint8)
    with h5py.File(folder / REPR / "event_representations.h5", "w") as handle:
        handle.create_dataset("data", data=data, chunks=(1, 20, height, width), **hdf5plugin.Blosc(cname="zstd"))
    np.save(folder / REPR / "timestamps_us.npy", ends)
    np.save(folder / REPR / "objframe_idx_2_repr_idx.npy", np.array(label_windows, np.int64))
    dtype = [("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "<u4"),
             ("track_id", "<u4"), ("class_confidence", "<f4")]
    labels = np.zeros(len(label_windows), dtype)
    labels["t"], labels["w"], labels["h"], labels["class_confidence"] = ends[label_windows], 40, 30, 1
    np.savez(folder / "labels_v2" / "labels.npz", labels=labels,
             objframe_idx_2_label_idx=np.arange(len(label_windows)))
    np.save(folder / "labels_v2" / "timestamps_us.npy", ends[label_windows])
    return folder


@pytest.mark.parametrize("size,benchmark,length,scale", [((240, 304), "gen1", 21, 1), ((360, 640), "1mpx", 5, 2)])
def test_sequences_start_where_rvts_evaluation_starts_them(tmp_path, size, benchmark, length, scale):
    # windows 125 ms apart, ends off any grid from the first label; first label frame on window 30
    ends = 40_000 + 125_000 * np.arange(40, dtype=np.int64) + np.arange(40) % 3
    _rvt_folder(tmp_path, "seq", *size, ends, [30, 34, 38])
    dataset = open_dataset(tmp_path, "test")
    try:
        assert dataset.benchmark.name == benchmark and dataset.benchmark.scale == scale
        # RVT's 640x360 windows are its nearest-exact halving of the 1280x720 histogram: the specification says so
        rule = "nearest_exact" if scale == 2 else "bin"
        assert dataset.geometry.event_downscale == dataset.input_spec(bins=10).geometry.event_downscale == rule
        sequence = dataset.sequences[0]
        first = 30 - length + 1  # RVT: max(objframe_idx_2_repr_idx[0] - sequence_length + 1, 0)
        starts, ends_streamed = stream_windows(sequence, 20)
        np.testing.assert_array_equal(ends_streamed, ends[first:])
        assert sequence.start_us == ends[first] - 50_000
        assert sequence.stored.label_steps == [(int(ends[w]), w - first) for w in (30, 34, 38)]
        stored = sequence.model_inputs(dataset.input_spec(bins=10), starts[:2], ends_streamed[:2])
        with h5py.File(tmp_path / "test" / "seq" / REPR / "event_representations.h5", "r") as handle:
            np.testing.assert_array_equal(stored, handle["data"][first:first + 2])
        with pytest.raises(ConfigError, match="50 ms windows only"):
            stream_windows(sequence, 60)
        with pytest.raises(ConfigError, match="RVT histograms"):
            sequence.model_inputs(dataset.input_spec(bins=10).replace(time_norm="window"), starts[:1],
                                  ends_streamed[:1])
        if scale != 1:
            with pytest.raises(ConfigError, match="1/2 resolution"):
                open_dataset(tmp_path, "test", downsample=4)
            with pytest.raises(ConfigError, match="halved by sampling .*'bin' cannot change that"):
                open_dataset(tmp_path, "test", event_downscale="bin")
            binned = dataset.input_spec(bins=10)
            binned = binned.replace(geometry=dataclasses.replace(binned.geometry, event_downscale="bin"))
            with pytest.raises(ConfigError, match="reduced by sampling .* binned"):  # a model trained on x // 2
                sequence.model_inputs(binned, starts[:1], ends_streamed[:1])
        else:  # full resolution: either rule is the identity, kept as asked
            full = open_dataset(tmp_path, "test", event_downscale="nearest_exact")
            assert full.geometry.event_downscale == "nearest_exact" and not full.geometry.samples_events
            full.close()
        with pytest.raises(ConfigError, match="data.event_downscale .*'area'"):
            open_dataset(tmp_path, "test", event_downscale="area")
    finally:
        dataset.close()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not CKPT.is_file():
        pytest.skip("RVT peer checkpoint is not available")
    out = tmp_path_factory.mktemp("rvt_model")
    assert main(["convert", str(CKPT), "--out", str(out)]) == 0
    return out / "model.pt"


def test_converted_rvt_model_on_the_stored_windows_gives_rvts_detections(converted):
    """RVT's outputs for its first 4 stored windows of train/synth_000 (zero state at window 0, as its
    streaming evaluation starts), reproduced by streaming flexdet's RVT dataset through the stepper."""
    from flexdet.evaluation.stream import StreamRunner
    from flexdet.models.checkpoint import load_model

    torch.set_num_threads(1)
    io = np.load(IO)
    loaded = load_model(converted)
    dataset = open_dataset(RVT_ROOT, "train")
    try:
        sequence = next(s for s in dataset.sequences if s.name == str(io["sequence"]))
        starts, ends = stream_windows(sequence, 20)
        np.testing.assert_array_equal(ends[:4], io["window_end_us"])
        runner = StreamRunner(loaded.model, loaded.spec, dataset.benchmark)
        runner.runtime.conf_thresh = float(io["conf_default"])
        detections = runner.run(sequence, starts[:4], ends[:4])
    finally:
        dataset.close()
    for step, got in enumerate(detections):
        want = io["dets_c0p1"][io["dets_c0p1_step"] == step]
        assert len(got["boxes"]) == len(want), step
        # pair each of RVT's detections with flexdet's nearest box (near-equal scores make sort orders differ)
        mine = np.abs(got["boxes"][None, :, :] - want[:, None, :4]).max(axis=2).argmin(axis=1)
        assert len(set(mine.tolist())) == len(want), step
        np.testing.assert_allclose(got["boxes"][mine], want[:, :4], atol=2e-2)
        np.testing.assert_allclose(got["scores"][mine], want[:, 5], atol=1e-4)
        np.testing.assert_array_equal(got["labels"][mine], want[:, 6])


def test_flexdet_eval_on_rvt_folder_scores_every_label_frame_as_flexdet_score_does(converted, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "eval"
    assert main(["eval", str(converted), "--data", str(RVT_ROOT), "--split", "test", "--out", str(out)]) == 0
    # the default rates 20,60,90,180 asked for more than the stored windows
    assert "stored windows only, evaluated at 20 Hz" in capsys.readouterr().err
    rows = json.loads((out / "metrics.json").read_text())
    assert [r["rate_hz"] for r in rows] == [20.0]
    labels = np.load(RVT_ROOT / "test" / "synth_002" / "labels_v2" / "labels.npz")["labels"]
    # every label frame is paired with its window; the 0.5 s skip is the scorer's (checked against score below)
    assert rows[0]["steps_scored"] == len(np.unique(labels["t"]))
    predictions = np.load(out / "predictions" / "20hz" / "synth_002.npy")
    stored_ends = np.load(RVT_ROOT / "test" / "synth_002" / REPR / "timestamps_us.npy")
    assert set(np.unique(predictions["t"]).tolist()) <= set(stored_ends.tolist())
    assert main(["score", "--benchmark", "gen1", "--labels", str(RVT_ROOT), "--predictions",
                 str(out / "predictions" / "20hz"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    for name in METRIC_NAMES:
        value = scored[name]
        assert value == pytest.approx(rows[0][name], abs=1e-9, nan_ok=True) or (value is None and
                                                                                 rows[0][name] < 0), name


def test_short_training_run_on_rvt_folder_then_eval(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--preset", "quickstart", "--data", str(RVT_ROOT), "--out", str(run),
                 "model.inputs=events", "data.downsample=1", "data.batch_size=2", "data.clip_steps=3",
                 "optim.steps=2", "run.progress=false", "run.threads=1", "run.checkpoint_every=2"]) == 0
    from flexdet.models.checkpoint import load_model

    loaded = load_model(run / "checkpoints" / "last.pt")
    assert (loaded.spec.time_norm, loaded.spec.end_inclusive, loaded.spec.size) == ("events", True, (304, 240))
    assert loaded.train_config["data"]["benchmark"] in ("auto", "gen1")
    assert main(["eval", str(run / "checkpoints" / "last.pt"), "--data", str(RVT_ROOT), "--split", "val",
                 "--rates", "20", "--out", str(tmp_path / "eval")]) == 0
    rows = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert rows[0]["steps_scored"] > 0 and "AP" in rows[0]


@pytest.mark.parametrize("first_rows", ["negative", "reversed"])
def test_label_frame_indices_that_are_negative_or_reversed_are_refused(tmp_path, first_rows):
    import shutil

    from flexdet.errors import FormatError

    root = tmp_path / "rvt"
    shutil.copytree(RVT_ROOT / "test", root / "test")
    path = next((root / "test").glob("*/labels_v2/labels.npz"))
    with np.load(path) as archive:
        labels, rows = archive["labels"], archive["objframe_idx_2_label_idx"].copy()
    assert len(rows) > 1
    rows = np.concatenate(([-1], rows[1:])) if first_rows == "negative" else rows[::-1].copy()
    np.savez(path, labels=labels, objframe_idx_2_label_idx=rows)
    with pytest.raises(FormatError, match="objframe_idx_2_label_idx must be increasing"):
        open_dataset(root, "test").close()
