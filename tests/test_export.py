"""ONNX / TensorRT export: `flexdet export` artifacts, metadata round trip, streamed parity with PyTorch, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flexdet.cli import main as cli_main
from flexdet.data.input_spec import identity_spec
from flexdet.errors import CheckpointError, FormatError, MissingDependencyError
from flexdet.export import DeployMetadata, export_bundle, metadata_for_model, read_onnx_metadata
from flexdet.models import build_model
from flexdet.models.checkpoint import load_model, save_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

HEIGHT, WIDTH = 64, 96
STEPS = 50


@pytest.fixture(scope="module")
def event_only_dir(tmp_path_factory):
    """`flexdet export --preset nano` (event-only, random seeded weights) at 64x96."""
    out = tmp_path_factory.mktemp("export_events")
    code = cli_main(["export", "--preset", "nano", "--seed", "3", "--num-classes", "3", "--no-frames",
                     "--height", str(HEIGHT), "--width", str(WIDTH), "--classes", "car,person,bike",
                     "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def fused_dir(tmp_path_factory):
    """A fused nano model exported with export_bundle at 64x96 (step graph + frame encoder graph)."""
    out = tmp_path_factory.mktemp("export_fused")
    torch.manual_seed(1)
    model = build_model("nano", num_classes=2, use_frames=True).eval()
    export_bundle(model, metadata_for_model(model, identity_spec(HEIGHT, WIDTH)), out)
    return out


def _session(path):
    """A CPU session that does not spin-wait (spinning threads starve torch on a shared 2-core machine)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _histograms(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 11, (1, 20, HEIGHT, WIDTH)).astype(np.float32) for _ in range(count)]


def test_cli_export_writes_checkpoint_graph_and_metadata(event_only_dir):
    assert {p.name for p in event_only_dir.iterdir()} >= {"model.pt", "model.onnx", "metadata.json"}
    proto = onnx.load(str(event_only_dir / "model.onnx"))
    onnx.checker.check_model(proto)
    ops = {node.op_type for node in proto.graph.node}
    assert not {"DFT", "STFT"} & ops and "MatMul" in ops  # matmul DFT, no torch.fft
    assert proto.ir_version <= 10
    model = load_model(event_only_dir / "model.pt").model
    names = model.state_names()
    assert [i.name for i in proto.graph.input] == ["events", *[f"in_{n}" for n in names]]
    assert [o.name for o in proto.graph.output] == ["raw", *[f"out_{n}" for n in names]]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 20, HEIGHT, WIDTH]


def test_metadata_round_trip_through_onnx_json_and_checkpoint(event_only_dir):
    from_onnx = read_onnx_metadata(event_only_dir / "model.onnx")
    from_json = DeployMetadata.from_json((event_only_dir / "metadata.json").read_text())
    from_checkpoint = load_model(event_only_dir / "model.pt")
    assert from_onnx == from_json
    assert from_checkpoint.spec == from_onnx.input and from_checkpoint.classes == from_onnx.classes
    assert from_onnx.classes == ["car", "person", "bike"]
    assert (from_onnx.height, from_onnx.width, from_onnx.input.bins, from_onnx.window_us) == (HEIGHT, WIDTH, 10,
                                                                                                50_000)
    assert from_onnx.state_names == [f"lstm_{k}{i}" for i in range(4) for k in "hc"]
    assert from_onnx.model_config["widths"] == [16, 32, 64, 128] and from_onnx.flexdet_version
    raw_json = json.loads(onnx.load(str(event_only_dir / "model.onnx")).metadata_props[0].value)
    assert raw_json["input"]["representation"] == "stacked_histogram" and raw_json["use_frames"] is False


def test_metadata_written_before_the_input_specification_still_loads():
    legacy = {"height": 48, "width": 64, "classes": ["a"], "bins": 5, "clip": 7, "window_us": 10_000,
              "dual_windows": False, "representation": "stacked_histogram", "use_frames": False}
    metadata = DeployMetadata.from_json(json.dumps(legacy))
    assert metadata.input == identity_spec(48, 64, bins=5, clip=7, window_us=10_000)
    assert (metadata.height, metadata.width, metadata.classes) == (48, 64, ["a"])


def test_event_only_onnx_matches_torch_over_50_streamed_steps(event_only_dir):
    model = load_model(event_only_dir / "model.pt").model
    session = _session(event_only_dir / "model.onnx")
    names = model.state_names()
    state = model.init_state(1, HEIGHT, WIDTH)
    ort_state = [s.numpy() for s in state]
    for events in _histograms(0, STEPS):
        with torch.no_grad():
            raw, *state = model.forward_raw(torch.from_numpy(events), None, *state)
        outputs = session.run(None, {"events": events, **{f"in_{n}": v for n, v in zip(names, ort_state)}})
        np.testing.assert_allclose(outputs[0], raw.numpy(), rtol=1e-4, atol=1e-4)
        ort_state = outputs[1:]  # ONNX's own state is fed back, so errors would accumulate
    for got, want in zip(ort_state, state):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_fused_onnx_with_frame_encoder_matches_torch_frame_branch(fused_dir):
    """Torch runs the frame branch inside forward_raw on frame steps; ONNX runs the separate encoder graph."""
    model = load_model(fused_dir / "model.pt").model
    step, encoder = _session(fused_dir / "model.onnx"), _session(fused_dir / "frame_encoder.onnx")
    names = model.state_names()
    state = model.init_state(1, HEIGHT, WIDTH)
    ort_state = dict(zip(names, (s.numpy() for s in state)))
    rng = np.random.default_rng(5)
    for k, events in enumerate(_histograms(1, STEPS)):
        frames = rng.random((1, 3, HEIGHT, WIDTH), dtype=np.float32) if k % 10 == 0 else None
        with torch.no_grad():
            raw, *state = model.forward_raw(torch.from_numpy(events), None if frames is None else
                                            torch.from_numpy(frames), *state)
        if frames is not None:
            feats = encoder.run(None, {"frames": frames})
            ort_state.update({o.name[4:]: v for o, v in zip(encoder.get_outputs(), feats)})
        outputs = step.run(None, {"events": events, **{f"in_{n}": v for n, v in ort_state.items()}})
        np.testing.assert_allclose(outputs[0], raw.numpy(), rtol=1e-4, atol=1e-4)
        ort_state = dict(zip(names, outputs[1:]))


def test_dynamic_batch_export_runs_two_sequences_at_once(tmp_path):
    torch.manual_seed(2)
    model = build_model("nano", num_classes=2, use_frames=False).eval()
    export_bundle(model, metadata_for_model(model, identity_spec(HEIGHT, WIDTH)), tmp_path, dynamic_batch=True)
    session = _session(tmp_path / "model.onnx")
    events = np.concatenate(_histograms(7, 2))
    state = model.init_state(2, HEIGHT, WIDTH)
    outputs = session.run(None, {"events": events, **{f"in_{n}": s.numpy() for n, s in
                                                      zip(model.state_names(), state)}})
    with torch.no_grad():
        raw = model.forward_raw(torch.from_numpy(events), None, *state)[0]
    assert outputs[0].shape[0] == 2
    np.testing.assert_allclose(outputs[0], raw.numpy(), rtol=1e-4, atol=1e-4)


def test_metadata_errors_are_clear(tmp_path):
    with pytest.raises(FormatError, match="not valid JSON"):
        DeployMetadata.from_json("{broken", source="m.json")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 not a protobuf at all" * 10)
    with pytest.raises(FormatError, match="bad.onnx"):
        read_onnx_metadata(bad)


def test_missing_corrupt_and_mismatched_checkpoints_raise_checkpoint_error(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_model(corrupt)
    model = build_model("nano", num_classes=2, use_frames=False)
    save_model(tmp_path / "ok.pt", model, identity_spec(HEIGHT, WIDTH))
    payload = torch.load(tmp_path / "ok.pt", weights_only=True)
    payload["model_config"]["widths"] = [8, 16, 32, 64]
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "mismatch.pt")
    assert cli_main(["export", str(corrupt), "--out", str(tmp_path / "o")]) == 2
    assert "corrupt.pt" in capsys.readouterr().err


def test_tensorrt_missing_gives_missing_dependency_error(event_only_dir):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here; the real build test covers it")
    except ImportError:
        pass
    from flexdet.export import build_engine

    with pytest.raises(MissingDependencyError, match="tensorrt"):
        build_engine(event_only_dir / "model.onnx", event_only_dir / "model.engine")


def test_tensorrt_engine_builds_from_the_onnx_graph(event_only_dir, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from flexdet.export import build_engine

    engine = build_engine(event_only_dir / "model.onnx", tmp_path / "model.engine", fp16=False)
    assert engine.stat().st_size > 0


@pytest.mark.gpu
def test_fp16_export_on_cuda_stays_close_to_fp32(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("fp16 export is traced on a CUDA device; no CUDA here")
    torch.manual_seed(4)
    model = build_model("nano", num_classes=2, use_frames=False).eval()
    export_bundle(model, metadata_for_model(model, identity_spec(HEIGHT, WIDTH)), tmp_path, fp16=True, device="cuda")
    assert read_onnx_metadata(tmp_path / "model.onnx").dtype == "float16"
    session = _session(tmp_path / "model.onnx")
    events = _histograms(3, 1)[0]
    state = model.init_state(1, HEIGHT, WIDTH)
    outputs = session.run(None, {"events": events.astype(np.float16),
                                 **{f"in_{n}": s.numpy().astype(np.float16) for n, s in
                                    zip(model.state_names(), state)}})
    with torch.no_grad():
        raw = model.forward_raw(torch.from_numpy(events), None, *state)[0]
    np.testing.assert_allclose(outputs[0].astype(np.float32)[..., 4:], raw.numpy()[..., 4:], atol=2e-2)


def test_training_checkpoints_without_an_input_specification_load_one_from_their_dataset_info(tmp_path):
    training = pytest.importorskip("flexdet.training.checkpoint")
    from flexdet.config import to_dict

    torch.manual_seed(6)
    model = build_model("nano", num_classes=2, use_frames=False)
    training.save_checkpoint(tmp_path / "last.pt", {
        "model": model.state_dict(), "model_config": to_dict(model.config), "step": 7,
        "config": {"data": {"rates_hz": [40.0], "bins": 10}},
        "dataset": {"classes": ["car", "pedestrian"], "input_size": [WIDTH, HEIGHT]}})
    loaded = load_model(tmp_path / "last.pt")
    assert (loaded.spec.size, loaded.spec.window_us) == ((WIDTH, HEIGHT), 25_000)
    assert loaded.classes == ["car", "pedestrian"] and loaded.train_config["data"]["rates_hz"] == [40.0]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)
