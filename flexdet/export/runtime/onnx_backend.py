"""onnxruntime backend: the exported step graph, its state outputs fed back as the next step's inputs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from flexdet.errors import ConfigError, FormatError, MissingDependencyError
from flexdet.export.metadata import DeployMetadata
from flexdet.export.onnx_export import EVENTS_INPUT, FRAMES_INPUT, RAW_OUTPUT, state_input, state_output

_LEVELS = ("disable", "basic", "extended", "layout", "all")


def make_session(path: os.PathLike[str] | str, providers: Sequence[str] | None = None,
                 intra_op_num_threads: int | None = None, graph_optimization_level: str = "all",
                 allow_spinning: bool = False, execution_mode: str = "sequential",
                 inter_op_num_threads: int | None = None, enable_cpu_mem_arena: bool = True):
    """An onnxruntime InferenceSession with explicit threads and graph optimisation level. Worker threads do
    not spin-wait between runs by default: spinning steals the CPU from the representation and NMS stages.
    execution_mode "parallel" runs independent branches on `inter_op_num_threads` threads."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("onnxruntime", "the onnxruntime backend") from None
    if graph_optimization_level not in _LEVELS:
        raise ConfigError(f"graph_optimization_level must be one of {_LEVELS}, got {graph_optimization_level!r}")
    levels = dict(zip(_LEVELS, (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT",
                                        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
                                ort.GraphOptimizationLevel.ORT_ENABLE_ALL)))
    if execution_mode not in ("sequential", "parallel"):
        raise ConfigError(f"execution_mode must be 'sequential' or 'parallel', got {execution_mode!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[graph_optimization_level]
    options.enable_cpu_mem_arena = bool(enable_cpu_mem_arena)
    if execution_mode == "parallel":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        if inter_op_num_threads:
            options.inter_op_num_threads = int(inter_op_num_threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    if intra_op_num_threads:
        options.intra_op_num_threads = int(intra_op_num_threads)
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise FormatError(path, f"onnxruntime cannot load the model ({type(exc).__name__}: {exc})") from None


class OnnxRuntimeBackend:
    """Runs `model.onnx` (and `frame_encoder.onnx` when a frame arrives) with numpy state buffers."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, metadata: DeployMetadata, encoder_path: Path | None = None,
                 **session_options) -> None:
        self.metadata = metadata
        self.path = Path(onnx_path)
        self.session_options = dict(session_options)
        self.session = make_session(onnx_path, **session_options)
        self.encoder = make_session(encoder_path, **session_options) if encoder_path is not None else None
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.dtype = np.float16 if inputs[EVENTS_INPUT].type == "tensor(float16)" else np.float32
        self._shapes = {name: [1 if not isinstance(d, int) else d for d in inputs[state_input(name)].shape]
                        for name in metadata.state_names if state_input(name) in inputs}
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.state: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self, batch_size: int = 1) -> None:
        """Zero state for `batch_size` streams (more than one needs a graph exported with a dynamic batch)."""
        if batch_size != 1 and not self.metadata.dynamic_batch:
            raise ConfigError(f"this graph was exported for one stream; export with --dynamic-batch to run "
                              f"{batch_size} side by side")
        self.state = {name: np.zeros([batch_size, *shape[1:]], self.dtype) for name, shape in self._shapes.items()}

    def frame_keys(self) -> list[str]:
        """Which state entries hold the frame encoder's maps."""
        return [o.name.removeprefix("out_") for o in self.encoder.get_outputs()] if self.encoder is not None else []

    def encode_frame(self, frame: np.ndarray) -> None:
        """Run the frame encoder and store its maps as the cached frame state."""
        names = [o.name for o in self.encoder.get_outputs()]
        maps = self.encoder.run(names, {FRAMES_INPUT: frame.astype(self.dtype)})
        for output, value in zip(names, maps):
            self.state[output.removeprefix("out_")] = value

    def run(self, events: np.ndarray) -> torch.Tensor:
        feed = {EVENTS_INPUT: events.astype(self.dtype)}
        feed.update({state_input(name): value for name, value in self.state.items()})
        results = dict(zip(self._outputs, self.session.run(self._outputs, feed)))
        for name in self.state:
            self.state[name] = results[state_output(name)]
        return torch.from_numpy(results[RAW_OUTPUT]).float()
