"""Every representation a model can read (InputSpec.representation): the specification builds exactly what the
representation functions build, plays it backwards where that is defined, and a model trained on it carries it
through its checkpoint, evaluation, ONNX export and every runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from readers_helpers import random_events
from test_datasets import tiny_dataset
from test_trainer import TINY

from flexdet.cli import main as cli_main
from flexdet.data.input_spec import identity_spec
from flexdet.data.representations import event_frame, stacked_histogram, time_surface, voxel_grid
from flexdet.data.representations.reverse import reverse_events
from flexdet.datasets import WindowCache, open_dataset
from flexdet.errors import ConfigError, FlexdetError
from flexdet.evaluation.evaluate import evaluate_checkpoint
from flexdet.export import load_runtime
from flexdet.models.checkpoint import load_model
from flexdet.training.config import load_train_config
from flexdet.training.trainer import train

H, W = 24, 32


def _events(n: int = 4000, seed: int = 0, t0: int = 1_000, t1: int = 51_000) -> np.ndarray:
    return random_events(n, W, H, t1 - t0, seed, t0)


@pytest.mark.parametrize("kind, channels, dtype", [("stacked_histogram", 20, np.uint8), ("voxel_grid", 10, np.float32),
                                                   ("time_surface", 2, np.float32), ("event_frame", 2, np.uint8)])
def test_the_specification_builds_what_the_representation_functions_build(kind, channels, dtype):
    spec = identity_spec(H, W, representation=kind, bins=10, clip=7)
    events = _events()
    starts, ends = np.array([1_000, 21_000]), np.array([51_000, 41_000])
    inputs = spec.model_inputs(events, starts, ends)
    assert spec.channels == channels and inputs.shape == (2, channels, H, W) and inputs.dtype == dtype
    assert spec.input_dtype == dtype and kind.split("_")[0] in spec.event_encoding
    for k, (a, b) in enumerate(zip(starts, ends)):
        assert np.array_equal(inputs[k], _direct(kind, events, int(a), int(b)).astype(dtype)), kind
    assert spec.replace(dual_windows=True).model_inputs(events, starts, ends).shape == (2, 2 * channels, H, W)
    assert "stacked histogram" in spec.replace(representation="stacked_histogram").event_encoding


def _direct(kind: str, events: np.ndarray, a: int, b: int) -> np.ndarray:
    """The window [a, b) through the single-window function of `kind` (bins 10, clip 7)."""
    if kind == "stacked_histogram":
        return stacked_histogram(events, H, W, 10, a, b, clip=7)
    if kind == "voxel_grid":
        return voxel_grid(events, H, W, 10, a, b)
    if kind == "time_surface":
        return time_surface(events, H, W, None, a, b)
    return event_frame(events, H, W, a, b, clip=7)


def test_played_backwards_each_representation_is_that_of_the_reversed_events():
    events = _events(seed=1)
    t0, t1 = 1_000, 51_000
    reversed_events = reverse_events(events, t0, t1)
    frame = identity_spec(H, W, representation="event_frame", clip=255)
    got = frame.model_inputs(events, [t0], [t1], backwards=True)[0]
    assert np.array_equal(got, event_frame(reversed_events, H, W, t0, t1, clip=255))
    voxel = identity_spec(H, W, representation="voxel_grid", bins=5)
    got = voxel.model_inputs(events, [t0], [t1], backwards=True)[0]
    want = voxel_grid(reversed_events, H, W, 5, t0, t1)
    # reverse_events mirrors t -> t0 + t1 - 1 - t, the voxel grid's reversal t -> t0 + t1 - t: 1 µs apart, each
    # event's weight differs by (bins - 1) / window = 8e-5
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert np.abs(got).sum() > 100  # not an empty comparison
    surface = identity_spec(H, W, representation="time_surface")
    with pytest.raises(FlexdetError, match="cannot be played backwards"):
        surface.model_inputs(events, [t0], [t1], backwards=True)


def test_a_specification_names_what_it_cannot_build():
    with pytest.raises(ConfigError, match="input.representation must be one of"):
        identity_spec(H, W, representation="voxel")
    with pytest.raises(ConfigError, match="data.representation must be one of"):
        load_train_config(preset="quickstart", overrides=["data.representation=spikes"])


@pytest.fixture(scope="module")
def voxel_run(tmp_path_factory) -> tuple[Path, Path]:
    data = tiny_dataset(tmp_path_factory.mktemp("voxel_data"))
    out = tmp_path_factory.mktemp("voxel_run") / "run"
    config = load_train_config(preset="quickstart", overrides=TINY + ["data.representation=voxel_grid", "data.bins=6",
                                                                      "optim.steps=2"])
    train(config, data, out)
    return data, out


def test_a_voxel_grid_model_trains_evaluates_and_keeps_its_representation(voxel_run, tmp_path):
    data, run = voxel_run
    loaded = load_model(run)
    assert loaded.spec.representation == "voxel_grid" and loaded.spec.channels == 6
    assert loaded.model.config.in_channels == 6
    rows = evaluate_checkpoint(run, data, [20.0], out_dir=tmp_path / "eval", split="test", progress=False)
    assert rows and all(0.0 <= row["AP"] <= 1.0 for row in rows)


def test_a_voxel_grid_export_runs_the_same_on_torch_and_onnxruntime(voxel_run, tmp_path):
    _, run = voxel_run
    out = tmp_path / "export"
    assert cli_main(["export", str(run), "--out", str(out)]) == 0
    runtimes = [load_runtime(out, backend=backend, device="cpu") if backend == "torch"
                else load_runtime(out, backend=backend) for backend in ("torch", "onnxruntime")]
    sensor_w, sensor_h = runtimes[0].spec.sensor_size
    from flexdet.data.events import EVENT_DTYPE

    rng = np.random.default_rng(3)
    raws = [[], []]
    for step in range(4):
        n = 3000
        events = np.zeros(n, EVENT_DTYPE)
        events["t"] = np.sort(rng.integers(step * 10_000, step * 10_000 + 50_000, n))
        events["x"], events["y"] = rng.integers(0, sensor_w, n), rng.integers(0, sensor_h, n)
        events["p"] = rng.integers(0, 2, n)
        for k, runtime in enumerate(runtimes):
            raws[k].append(runtime.step(events, t_end=step * 10_000 + 50_000)["raw"])
    np.testing.assert_allclose(np.stack(raws[1]), np.stack(raws[0]), rtol=1e-4, atol=1e-4)
    spec = runtimes[0].spec
    width, height = spec.size
    with pytest.raises(ConfigError, match="inputs must be float32"):
        runtimes[1].step_inputs(np.zeros((1, spec.channels, height, width), np.uint8))
    for runtime in runtimes:
        runtime.close()


def test_the_disk_cache_keeps_representations_of_the_same_size_apart(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    dataset = open_dataset(data, "train", downsample=2)
    sequence = dataset.sequences[0]
    histogram = dataset.input_spec(bins=5)            # 10 channels, uint8
    voxel = dataset.input_spec(representation="voxel_grid", bins=10)  # 10 channels, float32
    cached = {}
    for name, spec in (("histogram", histogram), ("voxel", voxel)):
        cache = WindowCache(spec, cache_dir=str(tmp_path / "cache"))
        cached[name] = np.asarray(cache.inputs(sequence, 20.0, 3))
        assert np.array_equal(cached[name], sequence.model_inputs(spec, *(a[3:4] for a in cache.windows(sequence,
                                                                                                         20.0)))[0])
    assert cached["histogram"].dtype == np.uint8 and cached["voxel"].dtype == np.float32
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2
    dataset.close()
