"""TensorRT backend: a deserialized engine executed on torch CUDA buffers, state ping-ponged without copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flexdet.errors import ConfigError, FormatError
from flexdet.export.metadata import DeployMetadata
from flexdet.export.onnx_export import EVENTS_INPUT, FRAMES_INPUT, RAW_OUTPUT, state_input, state_output
from flexdet.export.tensorrt_build import import_tensorrt


class _Engine:
    """One engine, its execution context and a torch CUDA tensor bound to every I/O tensor."""

    def __init__(self, trt, path: Path, device: torch.device) -> None:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise FormatError(path, "TensorRT cannot deserialize this engine (other TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, torch.Tensor] = {}
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            shape = [1 if dim < 0 else dim for dim in self.engine.get_tensor_shape(name)]
            dtype = torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.context.set_input_shape(name, shape)
            self.buffers[name] = torch.zeros(shape, dtype=dtype, device=device)
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())

    def bind(self, name: str, tensor: torch.Tensor) -> None:
        self.buffers[name] = tensor
        self.context.set_tensor_address(name, tensor.data_ptr())

    def execute(self) -> None:
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise ConfigError("TensorRT execution failed (see the TensorRT log)")


class TensorRTBackend:
    """Runs `model.engine` (and `frame_encoder.engine` per new frame); each step's state outputs become the
    next step's inputs by swapping buffer addresses."""

    name = "tensorrt"

    def __init__(self, engine_path: Path, metadata: DeployMetadata, encoder_path: Path | None = None,
                 device: str | torch.device | None = None) -> None:
        trt = import_tensorrt()
        self.device = torch.device(device or "cuda")
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise ConfigError("the tensorrt backend needs a CUDA device")
        self.metadata = metadata
        self.step = _Engine(trt, Path(engine_path), self.device)
        self.encoder = _Engine(trt, Path(encoder_path), self.device) if encoder_path is not None else None
        self.names = [n for n in metadata.state_names if state_input(n) in self.step.buffers]

    def reset(self, batch_size: int = 1) -> None:
        """Zero the state buffers (the engine's static shapes hold one stream)."""
        if batch_size != 1:
            raise ConfigError("the tensorrt backend runs one stream at a time")
        for name in self.names:
            self.step.buffers[state_input(name)].zero_()

    def encode_frame(self, frame: np.ndarray) -> None:
        frames = self.encoder.buffers[FRAMES_INPUT]
        frames.copy_(torch.from_numpy(frame))
        self.encoder.execute()
        for name in self.names:
            if state_output(name) in self.encoder.buffers:
                self.step.buffers[state_input(name)].copy_(self.encoder.buffers[state_output(name)])

    def run(self, events: np.ndarray) -> torch.Tensor:
        self.step.buffers[EVENTS_INPUT].copy_(torch.from_numpy(events))
        self.step.execute()
        for name in self.names:
            previous_in, new_out = self.step.buffers[state_input(name)], self.step.buffers[state_output(name)]
            self.step.bind(state_input(name), new_out)
            self.step.bind(state_output(name), previous_in)
        torch.cuda.current_stream().synchronize()
        return self.step.buffers[RAW_OUTPUT].float()
