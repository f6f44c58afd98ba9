"""PyTorch backend: the FlexDetector itself, eager, with torch.compile, or replayed as a CUDA graph."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from flexdet.errors import ConfigError
from flexdet.export.metadata import DeployMetadata
from flexdet.export.onnx_export import StepGraph


class TorchBackend:
    """Runs one step of `model.forward_raw` with the state kept on the device.

    compile: False, True (inductor) or a torch.compile backend name ("eager", "aot_eager", ...).
    cuda_graphs: capture the step once and replay it (CUDA only: static buffers, no launch overhead).
    half: run in float16 (CUDA only).
    """

    name = "torch"

    def __init__(self, model: nn.Module, metadata: DeployMetadata, device: str | torch.device | None = None,
                 compile: bool | str = False, cuda_graphs: bool = False, half: bool = False) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if (cuda_graphs or half) and self.device.type != "cuda":
            raise ConfigError(f"cuda_graphs / half need a CUDA device, got {self.device}")
        self.dtype = torch.float16 if half else torch.float32
        self.model = model.eval().to(self.device, self.dtype)
        self.model.set_window_us(metadata.window_us)
        self.metadata = metadata
        step = StepGraph(self.model)
        if compile:
            step = torch.compile(step, backend="inductor" if compile is True else str(compile), dynamic=False)
        self._step = step
        self._num_lstm = self.model.num_lstm_states
        self.state = self._zero_state()
        self._graph: torch.cuda.CUDAGraph | None = None
        if cuda_graphs:
            self._capture()

    def _zero_state(self, batch_size: int = 1) -> list[torch.Tensor]:
        with torch.no_grad():
            init = self.model.init_state(batch_size, self.metadata.height, self.metadata.width, self.device)
        return [s.to(self.dtype) for s in init]

    def reset(self, batch_size: int = 1) -> None:
        """Zero the state for `batch_size` streams (in place under a CUDA graph, whose buffers must stay where
        the graph reads them: one stream only)."""
        if self._graph is None:
            self.state = self._zero_state(batch_size)
            return
        if batch_size != 1:
            raise ConfigError("a CUDA-graph backend runs one stream; build it without cuda_graphs for batches")
        for tensor in self.state:
            tensor.zero_()

    def frame_keys(self) -> list[int]:
        """Where the state holds the frame-branch maps (after the recurrent states)."""
        return list(range(self._num_lstm, len(self.state)))

    def encode_frame(self, frame: np.ndarray) -> None:
        """Replace the cached frame-branch maps with those of `frame` (1, 3, H, W) in [0, 1]."""
        x = torch.from_numpy(frame).to(self.device, self.dtype)
        with torch.no_grad():
            maps = self.model.encode_frames(x)
        if self._graph is None:
            self.state[self._num_lstm:] = maps
            return
        for tensor, new in zip(self.state[self._num_lstm:], maps):
            tensor.copy_(new)

    def run(self, events: np.ndarray) -> torch.Tensor:
        """(B, C, H, W) inputs (the specification's dtype) -> raw (B, A, 5 + K) on the device; the state advances
        one step."""
        x = torch.from_numpy(events).to(self.device, non_blocking=True)
        if self._graph is not None:
            self._static_events.copy_(x)
            self._graph.replay()
            outputs = self._static_outputs
            for tensor, new in zip(self.state, outputs[1:]):
                tensor.copy_(new)
        else:
            with torch.no_grad():
                outputs = self._step(x.to(self.dtype), *self.state)
            self.state = list(outputs[1:])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return outputs[0].float()

    def _capture(self) -> None:
        """Record one step into a CUDA graph reading static events/state buffers (warm-up on a side stream)."""
        spec = self.metadata.input
        self._static_events = torch.zeros(1, spec.channels, self.metadata.height, self.metadata.width,
                                          dtype=torch.from_numpy(np.empty(0, spec.input_dtype)).dtype,
                                          device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):
                self._step(self._static_events.to(self.dtype), *self.state)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            self._static_outputs = self._step(self._static_events.to(self.dtype), *self.state)
        self._graph = graph
        self.reset()
