"""ONNX export of FlexDetector.forward_raw (opset 17, TorchScript exporter): streamed parity with PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from flexdet.models import build_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

HEIGHT, WIDTH = 64, 96


class _RawStep(torch.nn.Module):
    """forward_raw with a fixed argument list, the shape torch.onnx.export wants."""

    def __init__(self, model: torch.nn.Module, with_frames: bool) -> None:
        super().__init__()
        self.model = model
        self.with_frames = with_frames

    def forward(self, events: torch.Tensor, *rest: torch.Tensor):
        if self.with_frames:
            return self.model.forward_raw(events, rest[0], *rest[1:])
        return self.model.forward_raw(events, None, *rest)


def _export(model, args, input_names, output_names, path, with_frames):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_RawStep(model, with_frames).eval(), args, str(path), opset_version=17, dynamo=False,
                          input_names=input_names, output_names=output_names)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    return graph, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _events(seed: int) -> torch.Tensor:
    return torch.randint(0, 5, (1, 20, HEIGHT, WIDTH), generator=torch.Generator().manual_seed(seed)).float()


def _assert_stream_matches(model, session, names, state, compare_state: bool, steps: int = 3) -> None:
    """Stream `steps` event windows through torch and the ONNX session, each fed its own state back (so errors
    would accumulate); raw outputs, and with `compare_state` the returned state, must agree to 1e-4."""
    ort_state = [s.numpy() for s in state]
    for step in range(steps):
        events = _events(step + 1)
        with torch.no_grad():
            raw, *state = model.forward_raw(events, None, *state)
        outputs = session.run(None, {"events": events.numpy(), **{f"in_{n}": v for n, v in zip(names, ort_state)}})
        np.testing.assert_allclose(outputs[0], raw.numpy(), rtol=1e-4, atol=1e-4)
        if compare_state:
            for got, want in zip(outputs[1:], state):
                np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
        ort_state = outputs[1:]


def test_event_only_export_matches_torch_over_streamed_steps(tmp_path):
    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=False, spectral_impl="matmul").eval()
    names = model.state_names()
    state = model.init_state(1, HEIGHT, WIDTH)
    graph, session = _export(model, (_events(0), *state), ["events", *[f"in_{n}" for n in names]],
                             ["raw", *[f"out_{n}" for n in names]], tmp_path / "nano.onnx", with_frames=False)
    ops = {node.op_type for node in graph.graph.node}
    assert not {"DFT", "STFT"} & ops and "MatMul" in ops
    assert [i.name for i in session.get_inputs()] == ["events", *[f"in_{n}" for n in names]]
    _assert_stream_matches(model, session, names, state, compare_state=True)


def test_fused_step_graph_with_cached_frame_features_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=True, spectral_impl="matmul").eval()
    names = model.state_names()
    frames = torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        state = model.init_state(1, HEIGHT, WIDTH)[:model.num_lstm_states] + model.encode_frames(frames)
    _, session = _export(model, (_events(0), *state), ["events", *[f"in_{n}" for n in names]],
                         ["raw", *[f"out_{n}" for n in names]], tmp_path / "fused.onnx", with_frames=False)
    assert len(session.get_inputs()) == 1 + len(names)
    _assert_stream_matches(model, session, names, state, compare_state=False)
