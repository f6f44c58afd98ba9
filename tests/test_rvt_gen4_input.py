"""Converted RVT 1 Mpx (Gen4) models see RVT's own inputs: histograms of a real 1280x720 recording made by RVT's
preprocessing code (tests/fixtures/rvt_gen4) against flexdet's input specification."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flexdet.config import from_dict, to_dict
from flexdet.convert.rvt import convert_rvt, input_spec
from flexdet.data.events import EVENT_DTYPE
from flexdet.data.geometry import Geometry
from flexdet.data.input_spec import InputSpec
from flexdet.errors import ConfigError
from flexdet.export.metadata import DeployMetadata, metadata_for_model

FIXTURE = Path(__file__).parent / "fixtures" / "rvt_gen4" / "gen4_histograms.npz"
VARIANTS_SCRIPT = Path(__file__).parent / "fixtures" / "rvt_variants" / "make_rvt_variants_fixture.py"
RECORDING = Path("../shared/data/real/evt3_gen41_1280x720_pedestrians.raw")
WINDOWS_MS = (50, 20)


@pytest.fixture(scope="module")
def rvt():
    data = np.load(FIXTURE)
    events = np.zeros(len(data["t"]), EVENT_DTYPE)
    for name in "txyp":
        events[name] = data[name]
    return events, {ms: (data[f"ends_us_{ms}ms"], data[f"hist_{ms}ms"]) for ms in WINDOWS_MS}


def _spec(event_downscale: str) -> InputSpec:
    """RVT's Gen4 rule: 1280x720 halved, bins from the window's first/last event, end included."""
    return InputSpec(Geometry(1280, 720, scale=2, event_downscale=event_downscale), bins=10, clip=10,
                     time_norm="events", end_inclusive=True, window_us=50_000)


def _inputs(spec: InputSpec, events: np.ndarray, ends: np.ndarray, window_ms: int) -> np.ndarray:
    return spec.model_inputs(events, ends - window_ms * 1000, ends)


@pytest.mark.parametrize("window_ms", WINDOWS_MS)
def test_nearest_exact_downscale_gives_rvts_gen4_histograms_bit_for_bit(rvt, window_ms):
    events, windows = rvt
    ends, want = windows[window_ms]
    got = _inputs(_spec("nearest_exact"), events, ends, window_ms)
    assert got.dtype == np.uint8 and got.shape == want.shape == (len(ends), 20, 360, 640)
    assert want.any()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("window_ms", WINDOWS_MS)
def test_binning_coordinates_does_not_give_rvts_gen4_histograms(rvt, window_ms):
    events, windows = rvt
    ends, want = windows[window_ms]
    got = _inputs(_spec("bin"), events, ends, window_ms)
    assert all(not np.array_equal(g, w) for g, w in zip(got, want) if w.any())


def test_rvt_times_the_bins_by_all_events_of_the_window_not_only_the_sampled_ones(rvt):
    """Sampling the events first and timing the bins by the kept ones (a 640x360 sensor fed the odd-pixel
    events) differs from RVT wherever the window's first or last event lies on an even row or column."""
    events, windows = rvt
    odd = events[(events["x"] % 2 == 1) & (events["y"] % 2 == 1)].copy()
    odd["x"] //= 2
    odd["y"] //= 2
    sampled_first = InputSpec(Geometry(640, 360), bins=10, clip=10, time_norm="events", end_inclusive=True)
    differs = 0
    for window_ms, (ends, want) in windows.items():
        got = _inputs(sampled_first, odd, ends, window_ms)
        differs += sum(not np.array_equal(g, w) for g, w in zip(got, want))
    assert differs > 0


@pytest.mark.parametrize("scale", [2, 4])
def test_nearest_exact_keeps_the_pixels_torch_nearest_exact_samples(scale):
    rng = np.random.default_rng(scale)
    events = np.zeros(4000, EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, 10_000, len(events)))
    events["x"] = rng.integers(0, 64, len(events))
    events["y"] = rng.integers(0, 48, len(events))
    events["p"] = rng.integers(0, 2, len(events))
    full = InputSpec(Geometry(64, 48), bins=4, clip=255, time_norm="events")
    small = InputSpec(Geometry(64, 48, scale=scale, event_downscale="nearest_exact"), bins=4, clip=255,
                      time_norm="events")
    full_hist = torch.from_numpy(full.model_inputs(events, [0], [10_000]))
    want = torch.nn.functional.interpolate(full_hist, scale_factor=1 / scale, mode="nearest-exact")
    np.testing.assert_array_equal(small.model_inputs(events, [0], [10_000]), want.numpy())


def test_event_downscale_is_validated_stored_and_defaults_to_binning():
    with pytest.raises(ConfigError, match="event_downscale"):
        Geometry(1280, 720, scale=2, event_downscale="odd")
    spec = _spec("nearest_exact")
    stored = to_dict(spec)
    assert stored["geometry"]["event_downscale"] == "nearest_exact"
    assert from_dict(InputSpec, stored) == spec
    del stored["geometry"]["event_downscale"]  # a specification written before the rule existed
    assert from_dict(InputSpec, stored).geometry.event_downscale == "bin"


@pytest.fixture(scope="module")
def gen4_model(tmp_path_factory):
    """`flexdet convert` of an RVT-S Gen4 checkpoint (RVT's tensor names and shapes, generated weights, no
    stored config: the dataset is told from the weights) -> the output folder."""
    from flexdet.cli import main

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("make_rvt_variants_fixture", VARIANTS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    io = np.load(VARIANTS_SCRIPT.with_name("rvt_variants.npz"))
    shapes = [tuple(int(v) for v in s.split(",") if v) for s in io["s_gen4_shapes"]]
    weights = module.generated_weights(list(io["s_gen4_keys"]), shapes, module.VARIANTS["s_gen4"][-1])
    folder = tmp_path_factory.mktemp("rvt_s_gen4")
    torch.save({"epoch": 0, "state_dict": {f"mdl.{k}": v for k, v in weights.items()}}, folder / "rvt_s.ckpt")
    assert main(["convert", str(folder / "rvt_s.ckpt"), "--out", str(folder / "model")]) == 0
    return folder


def test_a_converted_gen4_model_carries_the_rule_through_its_checkpoint_and_metadata(rvt, gen4_model, capsys):
    from flexdet.export.runtime import load_runtime
    from flexdet.models.checkpoint import load_model

    assert "note:" not in capsys.readouterr().err
    loaded = load_model(gen4_model / "model")
    assert loaded.spec == input_spec(convert_rvt(gen4_model / "rvt_s.ckpt"))
    assert loaded.spec.geometry.event_downscale == "nearest_exact" and loaded.spec.size == (640, 360)
    deployed = DeployMetadata.from_json(metadata_for_model(loaded.model, loaded.spec, loaded.classes).to_json())
    assert json.loads(deployed.to_json())["input"]["geometry"]["event_downscale"] == "nearest_exact"
    runtime = load_runtime(gen4_model / "model", backend="torch")
    events, windows = rvt
    for window_ms, (ends, want) in windows.items():
        for spec in (loaded.spec, deployed.input, runtime.spec):
            np.testing.assert_array_equal(_inputs(spec, events, ends, window_ms), want)


def test_a_converted_gen4_model_runs_in_the_headless_demo_on_the_real_1280x720_recording(gen4_model, tmp_path):
    from flexdet.cli import main

    if not RECORDING.is_file():
        pytest.skip("real recording not available")
    log = tmp_path / "demo.jsonl"
    assert main(["demo", "--source", str(RECORDING), "--model", str(gen4_model / "model"), "--backend", "torch",
                 "--rate", "100", "--speed", "0", "--headless", "--out", str(tmp_path / "demo.mp4"),
                 "--log", str(log), "--score-thresh", "0"]) == 0
    assert len(log.read_text().splitlines()) == 4 and (tmp_path / "demo.mp4").stat().st_size > 0


def test_the_disk_cache_keeps_the_two_downscale_rules_apart(rvt, tmp_path):
    """A training cache built with one rule is not handed out to a specification with the other."""
    from flexdet.data.boxes import BOX_DTYPE
    from flexdet.datasets.cache import WindowCache
    from flexdet.datasets.sequences import Sequence

    if not RECORDING.is_file():
        pytest.skip("real recording not available")
    events, _ = rvt
    labels = np.zeros(2, BOX_DTYPE)
    labels["t"] = events["t"][0], events["t"][-1]
    sequence = Sequence("pedestrians", RECORDING, RECORDING, labels)
    built = {}
    for rule in ("bin", "nearest_exact"):
        spec = _spec(rule)
        cache = WindowCache(spec, str(tmp_path))
        starts, ends = cache.windows(sequence, 50.0)
        built[rule] = np.asarray(cache.inputs(sequence, 50.0, np.arange(len(ends))))
        np.testing.assert_array_equal(built[rule], spec.model_inputs(events, starts, ends))
    assert len(list(tmp_path.iterdir())) == 2 and not np.array_equal(built["bin"], built["nearest_exact"])
