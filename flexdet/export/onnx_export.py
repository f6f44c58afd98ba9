"""FlexDetector -> ONNX: one streaming step with every recurrent state tensor as an explicit input and output.

Graphs: `model.onnx` is the step (events + state -> raw head output + new state, NMS left outside); a
fused model also gets `frame_encoder.onnx` (RGB frame -> the cached frame-branch maps of the state), so a
runtime runs the frame branch only when a new frame arrives. Spatial size is fixed (window attention and
the matmul DFT need it); the batch dimension may be dynamic.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from flexdet.atomic import atomic_path
from flexdet.errors import FlexdetError, MissingDependencyError
from flexdet.export.metadata import DeployMetadata, write_onnx_metadata

EVENTS_INPUT = "events"
FRAMES_INPUT = "frames"
RAW_OUTPUT = "raw"
FORBIDDEN_OPS = frozenset({"DFT", "STFT"})


def state_input(name: str) -> str:
    """Graph input name of state tensor `name`."""
    return f"in_{name}"


def state_output(name: str) -> str:
    """Graph output name of state tensor `name`."""
    return f"out_{name}"


class StepGraph(nn.Module):
    """`forward_raw(events, None, *state)` with a fixed argument list, as torch.onnx.export wants it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, events: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.forward_raw(events, None, *state)


class FrameEncoderGraph(nn.Module):
    """RGB (B, 3, H, W) in [0, 1] -> the frame-branch maps that fill the `frame_feat_*` state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.encode_frames(frames)


def deployable_copy(model: nn.Module, fp16: bool = False, device: torch.device | str | None = None) -> nn.Module:
    """An eval-mode copy with the matmul DFT (no torch.fft in the graph), optionally in half precision."""
    model = copy.deepcopy(model).eval()
    model.set_spectral_impl("matmul")
    if device is not None:
        model = model.to(device)
    return model.half() if fp16 else model


def export_onnx(model: nn.Module, metadata: DeployMetadata, path: os.PathLike[str] | str, opset: int = 17,
                dynamic_batch: bool = False, fp16: bool = False, simplify: bool = True,
                device: torch.device | str | None = None) -> dict[str, Path]:
    """Write the step graph to `path` (and `frame_encoder.onnx` beside it for a fused model); returns
    {"model": path, "frame_encoder": path?}. The graphs are checked, simplified with onnxslim when it is
    installed, carry `metadata` in metadata_props and use the lowest IR version their opset allows."""
    try:
        import onnx  # noqa: F401  (fail early with a clear message)
    except ImportError:
        raise MissingDependencyError("onnx", "ONNX export") from None
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if fp16 and device.type == "cpu":
        warnings.warn("fp16 export on the CPU traces half-precision CPU kernels; prefer a CUDA device", stacklevel=2)
    net = deployable_copy(model, fp16, device)
    net.set_window_us(metadata.window_us)  # S5: the graph runs at the specification's step period
    dtype = torch.float16 if fp16 else torch.float32
    height, width = metadata.height, metadata.width
    names = net.state_names()
    path = Path(path)
    encoder_path = path.with_name("frame_encoder.onnx") if net.config.use_frames else None
    metadata.state_names = list(names)
    metadata.dtype = "float16" if fp16 else "float32"
    metadata.dynamic_batch = dynamic_batch
    metadata.opset = opset
    metadata.frame_encoder = encoder_path.name if encoder_path else None

    channels = net.config.in_channels * net.num_views
    events = torch.zeros(1, channels, height, width, device=device, dtype=dtype)
    with torch.no_grad():
        state = tuple(s.to(dtype) for s in net.init_state(1, height, width, device))
    _export_graph(StepGraph(net), (events, *state), [EVENTS_INPUT, *map(state_input, names)],
                  [RAW_OUTPUT, *map(state_output, names)], path, opset, dynamic_batch, simplify, metadata)
    written = {"model": path}
    if encoder_path is not None:
        frames = torch.zeros(1, 3, height, width, device=device, dtype=dtype)
        frame_names = names[net.num_lstm_states:]
        _export_graph(FrameEncoderGraph(net), (frames,), [FRAMES_INPUT], list(map(state_output, frame_names)),
                      encoder_path, opset, dynamic_batch, simplify, metadata)
        written["frame_encoder"] = encoder_path
    return written


def _export_graph(module: nn.Module, args: tuple, input_names: list[str], output_names: list[str], path: Path,
                  opset: int, dynamic_batch: bool, simplify: bool, metadata: DeployMetadata) -> None:
    """Trace `module`, then check, slim, stamp metadata and save the graph atomically."""
    import onnx

    axes = {name: {0: "batch"} for name in input_names + output_names} if dynamic_batch else None
    with atomic_path(path) as traced:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python shape checks (sizes are fixed)
            torch.onnx.export(module, args, str(traced), opset_version=opset, dynamo=False,
                              input_names=input_names, output_names=output_names, dynamic_axes=axes)
        proto = onnx.load(str(traced))
        if simplify:
            proto = _slim(proto)
        ops = {node.op_type for node in proto.graph.node}
        if ops & FORBIDDEN_OPS:
            raise FlexdetError(f"{path}: exported graph contains {sorted(ops & FORBIDDEN_OPS)} nodes; the model "
                               "must use spectral_impl='matmul' for export")
        write_onnx_metadata(proto, metadata)
        proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import))
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(traced))


def _slim(proto):
    """onnxslim's constant folding and dead-node removal when it is installed (else the graph unchanged)."""
    try:
        import onnxslim
    except ImportError:
        return proto
    slimmed = onnxslim.slim(proto)
    return slimmed if slimmed is not None else proto

