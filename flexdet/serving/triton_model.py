"""The python-backend model Triton runs for `flexdet serve`: flexdet's onnxruntime backend over the exported
step graph, each stream's recurrent state kept by correlation id (`StreamStates`).

Triton's sequence batcher routes every request of a stream with its correlation id and START / END flags, and
puts the steps of different streams into one `execute` call: their states are stacked into one batch, run as one
call of the dynamic-batch graph, and split back. A request that cannot run (unknown stream, too many streams) gets
its own error response; the others in the call run. This file imports only
inside Triton's python backend stub (`triton_python_backend_utils`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from flexdet.errors import FlexdetError
from flexdet.export.metadata import DeployMetadata
from flexdet.export.onnx_export import EVENTS_INPUT, FRAMES_INPUT, RAW_OUTPUT
from flexdet.export.runtime.onnx_backend import OnnxRuntimeBackend
from flexdet.serving.errors import ServerError
from flexdet.serving.states import State, StreamStates


class TritonPythonModel:
    """Triton's python-backend entry points: initialize, execute, finalize."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.metadata = DeployMetadata.from_json(params["flexdet_metadata"], source="model config")
        folder = Path(args["model_repository"]) / args["model_version"]
        encoder = folder / self.metadata.frame_encoder if self.metadata.frame_encoder else None
        self.backend = OnnxRuntimeBackend(folder / "model.onnx", self.metadata, encoder,
                                          intra_op_num_threads=int(params.get("threads", "1")))
        self.backend.reset(1)
        self.zero = dict(self.backend.state)
        self.states = StreamStates(int(params["max_streams"]), float(params["idle_timeout_s"]))
        self._stop = threading.Event()
        period = min(1.0, self.states.idle_timeout_s / 4)
        self._evictor = threading.Thread(target=self._evict_loop, args=(period,), daemon=True)
        self._evictor.start()

    def execute(self, requests: list) -> list:
        """One batched step over every runnable request; an error response for each of the others."""
        responses: list = [None] * len(requests)
        rows = []
        for index, request in enumerate(requests):
            try:
                rows.append((index, *self._parse(request)))
            except FlexdetError as exc:
                responses[index] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
        if rows:
            states = [row[3] for row in rows]
            framed = [position for position, row in enumerate(rows) if row[4] is not None]
            if framed:
                encoded = self._encode([rows[position][4] for position in framed])
                for k, position in enumerate(framed):
                    states[position] = {**states[position], **{name: maps[k:k + 1] for name, maps in encoded.items()}}
            self.backend.state = {name: np.concatenate([s[name] for s in states]) for name in self.zero}
            raw = self.backend.run(np.concatenate([row[2] for row in rows])).numpy()
            for k, (index, stream, _, _, _, end) in enumerate(rows):
                if end:
                    self.states.end(stream)
                else:
                    self.states.put(stream, {name: value[k:k + 1].copy() for name, value in self.backend.state.items()})
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[_tensor(RAW_OUTPUT, raw[k:k + 1])])
        return responses

    def finalize(self) -> None:
        self._stop.set()

    def _parse(self, request) -> tuple[int, np.ndarray, State, np.ndarray | None, bool]:
        """(stream, events (1, C, H, W), its state, frames (1, 3, H, W) or None, end) of one request."""
        stream = int(_input(request, "CORRID").reshape(-1)[0])
        start = bool(_input(request, "START").reshape(-1)[0])
        end = bool(_input(request, "END").reshape(-1)[0])
        events = _input(request, EVENTS_INPUT)  # Triton's sequence batcher lets through a batch of 1 only
        frames = pb_utils.get_input_tensor_by_name(request, FRAMES_INPUT)  # only a fused model's config has it
        if frames is not None:
            frames = _array(frames)
        if start:
            self.states.start(stream, self.zero)
        return stream, events, self.states.get(stream), frames, end

    def _encode(self, frames: list[np.ndarray]) -> State:
        """Frame-branch maps of the stacked frames (one frame-encoder call)."""
        self.backend.state = {}
        self.backend.encode_frame(np.concatenate(frames))
        return self.backend.state

    def _evict_loop(self, period: float) -> None:
        """Free the state of streams whose clients went silent, also while no request arrives."""
        while not self._stop.wait(period):
            self.states.evict_idle()


def _input(request, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise ServerError(f"request without the '{name}' input")
    return _array(tensor)


def _array(tensor) -> np.ndarray:
    """A request tensor as numpy, through DLPack: the stub's numpy path predates numpy 2's array layout."""
    return torch.from_dlpack(tensor.to_dlpack()).numpy()


def _tensor(name: str, value: np.ndarray):
    """A response tensor from numpy, through DLPack (see `_array`)."""
    return pb_utils.Tensor.from_dlpack(name, torch.from_numpy(np.ascontiguousarray(value)))
