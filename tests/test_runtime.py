"""Streaming runtime: the representation it builds, state carried across steps, same detections on every
backend, frames kept between steps, clear errors for wrong inputs, and `flexdet bench`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flexdet.cli import main as cli_main
from flexdet.data.events import make_events
from flexdet.data.input_spec import identity_spec
from flexdet.errors import ConfigError, FlexdetError
from flexdet.export import export_bundle, load_runtime, metadata_for_model
from flexdet.models.checkpoint import load_model

pytest.importorskip("onnxruntime")

HEIGHT, WIDTH = 64, 96
WINDOW = 50_000
STEP_US = 10_000
STEPS = 12
ORT_OPTS = {"intra_op_num_threads": 1}


def _backends() -> list[str]:
    names = ["torch", "onnxruntime"]
    try:
        import tensorrt  # noqa: F401
        if torch.cuda.is_available():
            names.append("tensorrt")
    except ImportError:
        pass
    return names


@pytest.fixture(scope="module")
def events() -> np.ndarray:
    """A clustered event stream (moving blob + noise) over the whole test, time-sorted."""
    rng = np.random.default_rng(0)
    count = 60_000
    t = np.sort(rng.integers(0, WINDOW + STEPS * STEP_US, count))
    cx = 10 + (t / (WINDOW + STEPS * STEP_US)) * 70
    x = np.clip(np.round(cx + rng.normal(0, 6, count)), 0, WIDTH - 1).astype(np.int64)
    y = np.clip(np.round(32 + rng.normal(0, 8, count)), 0, HEIGHT - 1).astype(np.int64)
    return make_events(t, x, y, rng.integers(0, 2, count))


def _exported_bundle(folder, seed: int, use_frames: bool):
    """A nano model seeded with `seed`, exported as a bundle into `folder`."""
    torch.manual_seed(seed)
    model = build("nano", use_frames=use_frames)
    export_bundle(model, metadata_for_model(model, identity_spec(HEIGHT, WIDTH, window_us=WINDOW)), folder)
    return folder


@pytest.fixture(scope="module")
def event_dir(tmp_path_factory):
    return _exported_bundle(tmp_path_factory.mktemp("rt_events"), 11, use_frames=False)


@pytest.fixture(scope="module")
def fused_dir(tmp_path_factory):
    return _exported_bundle(tmp_path_factory.mktemp("rt_fused"), 12, use_frames=True)


def build(preset: str, use_frames: bool, **options):
    """A one-class random-weight model whose objectness/class logits are spread out: the prior-initialised
    head scores every anchor ~1e-4 (all tied), and near-equal class probabilities would make the argmax label
    of random weights arbitrary between backends. `options`: model config fields (e.g. in_channels)."""
    from flexdet.models import build_model

    model = build_model(preset, num_classes=1, use_frames=use_frames, **options).eval()
    with torch.no_grad():
        for conv in [*model.head.obj_preds, *model.head.cls_preds]:
            conv.weight.normal_(0.0, 0.3)
            conv.bias.zero_()
    return model


def reference_histogram(events: np.ndarray, t_end: int) -> np.ndarray:
    """Plain-numpy stacked histogram of [t_end - WINDOW, t_end): 10 bins per polarity, counts clipped at 10."""
    keep = (events["t"] >= t_end - WINDOW) & (events["t"] < t_end)
    chosen = events[keep]
    bins = (chosen["t"].astype(np.int64) - (t_end - WINDOW)) * 10 // WINDOW
    hist = np.zeros((20, HEIGHT, WIDTH), np.int64)
    np.add.at(hist, (chosen["p"].astype(np.int64) * 10 + bins, chosen["y"], chosen["x"]), 1)
    return np.minimum(hist, 10).astype(np.float32)[None]


def windows(events: np.ndarray):
    for k in range(STEPS):
        t_end = WINDOW + k * STEP_US
        lo, hi = np.searchsorted(events["t"], [t_end - 2 * WINDOW, t_end])  # extra events before the window
        yield events[lo:hi], t_end


def test_runtime_matches_hand_built_inputs_through_the_model(event_dir, events):
    """Each step's raw output equals forward_raw on a numpy-built histogram with the state carried by hand."""
    model = load_model(event_dir / "model.pt").model
    runtime = load_runtime(event_dir, backend="torch", device="cpu")
    state = model.init_state(1, HEIGHT, WIDTH)
    for chunk, t_end in windows(events):
        got = runtime.step(chunk, t_end=t_end)
        with torch.no_grad():
            raw, *state = model.forward_raw(torch.from_numpy(reference_histogram(events, t_end)), None, *state)
        np.testing.assert_allclose(got["raw"], raw[0].numpy(), rtol=1e-5, atol=1e-5)
        assert set(runtime.timings) == {"representation", "inference", "postprocess", "total"}
        assert runtime.timings["total"] >= runtime.timings["inference"] > 0


@pytest.mark.parametrize("kind", ["events", "fused"])
def test_every_backend_gives_the_same_detections(kind, event_dir, fused_dir, events):
    folder = event_dir if kind == "events" else fused_dir
    runtimes = {b: load_runtime(folder, backend=b, device="cuda" if b == "tensorrt" else "cpu",
                                **(ORT_OPTS if b == "onnxruntime" else {})) for b in _backends()}
    frames = np.random.default_rng(3).integers(0, 256, (STEPS, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for k, (chunk, t_end) in enumerate(windows(events)):
        frame = frames[k] if kind == "fused" and k % 4 == 0 else None
        outs = {b: r.step(chunk, t_end=t_end, frame=frame) for b, r in runtimes.items()}
        ref = _sorted(outs["torch"])
        assert len(ref["boxes"]) > 0
        for name, out in outs.items():
            np.testing.assert_allclose(out["raw"], outs["torch"]["raw"], rtol=1e-4, atol=1e-4, err_msg=name)
            out = _sorted(out)
            np.testing.assert_array_equal(out["labels"], ref["labels"], err_msg=name)
            np.testing.assert_allclose(out["boxes"], ref["boxes"], atol=1e-3, err_msg=name)
            np.testing.assert_allclose(out["scores"], ref["scores"], atol=1e-4, err_msg=name)


def _sorted(detections: dict) -> dict:
    """Detections in a backend-independent order (by label, then box rounded to 0.01 px): equal scores may
    come out of NMS in either order."""
    rounded = np.round(detections["boxes"], 2)
    order = np.lexsort((*rounded.T[::-1], detections["labels"]))
    return {key: detections[key][order] for key in ("boxes", "scores", "labels")}


def test_fused_runtime_keeps_the_latest_frame(fused_dir, events):
    """A step without a frame uses the last frame given: same as torch forward_raw with the frame branch run on
    that frame, state carried by hand."""
    model = load_model(fused_dir / "model.pt").model
    runtime = load_runtime(fused_dir, backend="onnxruntime", **ORT_OPTS)
    frame = np.random.default_rng(4).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    state = model.init_state(1, HEIGHT, WIDTH)
    for k, (chunk, t_end) in enumerate(list(windows(events))[:4]):
        got = runtime.step(chunk, t_end=t_end, frame=frame if k == 1 else None)
        frames = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255 if k == 1 else None
        with torch.no_grad():
            raw, *state = model.forward_raw(torch.from_numpy(reference_histogram(events, t_end)), frames, *state)
        np.testing.assert_allclose(got["raw"], raw[0].numpy(), rtol=1e-4, atol=1e-4)


def test_default_t_end_and_reset(event_dir, events):
    runtime = load_runtime(event_dir / "model.onnx", backend="onnxruntime", **ORT_OPTS)
    chunk = events[(events["t"] >= 20_000) & (events["t"] < 70_000)]
    first = runtime.step(chunk)  # t_end = last event + 1
    runtime.step(chunk)
    runtime.reset()
    again = runtime.step(chunk, t_end=int(chunk["t"][-1]) + 1)
    np.testing.assert_array_equal(first["raw"], again["raw"])
    assert first["boxes"].shape[1] == 4 and first["scores"].dtype == np.float32


@pytest.mark.slow
def test_torch_compile_plumbing_matches_eager(event_dir, events):
    eager = load_runtime(event_dir, backend="torch", device="cpu")
    compiled = load_runtime(event_dir, backend="torch", device="cpu", compile="eager")
    for chunk, t_end in list(windows(events))[:3]:
        np.testing.assert_allclose(compiled.step(chunk, t_end=t_end)["raw"], eager.step(chunk, t_end=t_end)["raw"],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_cuda_graphs_match_eager(event_dir, events):
    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a CUDA device")
    eager = load_runtime(event_dir, backend="torch", device="cuda")
    graphed = load_runtime(event_dir, backend="torch", device="cuda", cuda_graphs=True)
    for chunk, t_end in windows(events):
        np.testing.assert_allclose(graphed.step(chunk, t_end=t_end)["raw"], eager.step(chunk, t_end=t_end)["raw"],
                                   rtol=1e-4, atol=1e-4)


def test_wrong_inputs_raise_clear_errors(event_dir, fused_dir):
    runtime = load_runtime(event_dir, backend="onnxruntime", **ORT_OPTS)
    outside = make_events([10, 20], [5, WIDTH + 3], [5, 5], [1, 0])
    with pytest.raises(FlexdetError, match="event 1"):
        runtime.step(outside)
    with pytest.raises(ConfigError, match="no frame branch"):
        runtime.step(outside[:1], frame=np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    fused = load_runtime(fused_dir, backend="onnxruntime", **ORT_OPTS)
    with pytest.raises(ConfigError, match=r"\(64, 96, 3\)"):
        fused.step(outside[:1], frame=np.zeros((HEIGHT * 2, WIDTH, 3), np.uint8))
    with pytest.raises(ConfigError, match="backend"):
        load_runtime(event_dir, backend="openvino")
    with pytest.raises(FlexdetError, match="no such file"):
        load_runtime(event_dir / "missing.onnx")


def test_a_camera_of_another_size_is_letterboxed_onto_the_model_sensor(event_dir, events):
    """Events of a 2x larger camera land on the same model pixels (x' = floor(x / 2)); boxes come back x2."""
    plain = load_runtime(event_dir, backend="torch", device="cpu")
    fitted = load_runtime(event_dir, backend="torch", device="cpu")
    assert plain.fit_camera(WIDTH, HEIGHT) is None
    assert "scaled by 0.5" in fitted.fit_camera(2 * WIDTH, 2 * HEIGHT)
    assert fitted.sensor_size == (2 * HEIGHT, 2 * WIDTH)
    for chunk, t_end in list(windows(events))[:3]:
        big = chunk.copy()
        big["x"], big["y"] = chunk["x"] * 2 + 1, chunk["y"] * 2
        a, b = plain.step(chunk, t_end=t_end), fitted.step(big, t_end=t_end)
        np.testing.assert_array_equal(a["raw"], b["raw"])
        np.testing.assert_allclose(b["boxes"], a["boxes"] * 2, rtol=1e-6)


def test_preset_runtime_is_seeded_and_bench_prints_json(capsys):
    a = load_runtime("nano", backend="torch", device="cpu", height=HEIGHT, width=WIDTH, seed=5)
    b = load_runtime("nano", backend="torch", device="cpu", height=HEIGHT, width=WIDTH, seed=5)
    chunk = make_events(np.arange(0, 40_000, 10), np.arange(4000) % WIDTH, np.arange(4000) % HEIGHT,
                        np.arange(4000) % 2)
    np.testing.assert_array_equal(a.step(chunk)["raw"], b.step(chunk)["raw"])
    code = cli_main(["bench", "--model", "nano", "--backend", "torch", "--device", "cpu", "--steps", "3",
                     "--warmup", "1", "--height", str(HEIGHT), "--width", str(WIDTH), "--events-per-step", "2000",
                     "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps_per_s"] > 0 and report["backend"] == "torch"
    assert 1500 < report["events_per_step"] < 2500
    assert report["total_ms_p50"] >= report["inference_ms_p50"]
