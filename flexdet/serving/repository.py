"""Triton model repositories for an export folder.

`write_python_repository`: what `flexdet serve` runs, a python-backend model (`triton_model.py`) keeping each
stream's state by correlation id. `write_onnx_repository`: the same step graph for Triton's container with the
onnxruntime backend (optionally its TensorRT accelerator) and implicit state management, so a GPU server runs
without Python in the loop. Both use the sequence batcher's oldest strategy and carry the flexdet metadata in
the config's parameters, from which a client builds its histograms and post-processing.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexdet.errors import CheckpointError, ConfigError
from flexdet.export.bundle import CHECKPOINT_NAME, ONNX_NAME
from flexdet.export.metadata import DeployMetadata, read_onnx_metadata
from flexdet.export.onnx_export import EVENTS_INPUT, FRAMES_INPUT, RAW_OUTPUT, state_input, state_output

MODEL_NAME = "flexdet"
METADATA_PARAMETER = "flexdet_metadata"
QUEUE_DELAY_US = 2000  # how long the batcher waits for other streams' steps before running a partial batch
SHIM = "from flexdet.serving.triton_model import TritonPythonModel  # noqa: F401  (Triton loads this name)\n"


@dataclass
class ServeOptions:
    """Limits of a served model: streams at once, seconds of silence that free a stream, steps per batch."""

    max_streams: int = 64
    idle_timeout_s: float = 30.0
    max_batch: int = 8
    queue_delay_us: int = QUEUE_DELAY_US
    threads: int = 1

    def validate(self) -> None:
        if self.max_streams < 1:
            raise ConfigError(f"--max-streams must be >= 1, got {self.max_streams}")
        if not self.idle_timeout_s > 0:
            raise ConfigError(f"--idle-timeout must be positive, got {self.idle_timeout_s}")
        if self.max_batch < 1:
            raise ConfigError(f"--max-batch must be >= 1, got {self.max_batch}")


def write_python_repository(export_dir: os.PathLike[str] | str, out: os.PathLike[str] | str,
                            options: ServeOptions, name: str = MODEL_NAME) -> Path:
    """Model `name` in the repository at `out`, a python-backend model running the export's graphs; returns the
    model folder."""
    options.validate()
    metadata, graphs = dynamic_batch_graphs(export_dir, Path(out) / name / "1")
    channels, height, width = metadata.input.channels, metadata.height, metadata.width
    events_type = "TYPE_UINT8" if metadata.input.input_dtype == np.uint8 else "TYPE_FP32"  # the representation's
    inputs = [_tensor(EVENTS_INPUT, events_type, [channels, height, width])]
    if metadata.use_frames:
        inputs.append(_tensor(FRAMES_INPUT, "TYPE_FP32", [3, height, width], optional=True))
    controls = [_control("START", "CONTROL_SEQUENCE_START"), _control("END", "CONTROL_SEQUENCE_END"),
                _control("READY", "CONTROL_SEQUENCE_READY"), _corrid()]
    parameters = {METADATA_PARAMETER: metadata.to_json(), "max_streams": str(options.max_streams),
                  "idle_timeout_s": str(options.idle_timeout_s), "threads": str(options.threads)}
    # Triton backlogs sequences beyond max_candidate_sequences instead of refusing them; the model refuses past
    # max_streams with a message, so the batcher gets room for refused streams until they idle out.
    config = _config(name, "backend: \"python\"", options, inputs, _raw_output(graphs["model"]), controls, [],
                     2 * options.max_streams + options.max_batch, "KIND_CPU", parameters)
    (Path(out) / name / "1" / "model.py").write_text(SHIM)
    (Path(out) / name / "config.pbtxt").write_text(config)
    return Path(out) / name


def write_onnx_repository(export_dir: os.PathLike[str] | str, out: os.PathLike[str] | str, options: ServeOptions,
                          accelerator: str = "onnxruntime") -> Path:
    """A repository at `out` for Triton's onnxruntime backend (accelerator "tensorrt": its TensorRT execution
    provider) with implicit state: one `sequence_batching.state` per state tensor, zero at START. The graph
    gets START / READY / CORRID inputs and zeroes its state where START is set or READY is not."""
    import onnx

    options.validate()
    if accelerator not in ("onnxruntime", "tensorrt"):
        raise ConfigError(f"accelerator must be onnxruntime or tensorrt, got {accelerator!r}")
    if _metadata(export_dir).use_frames:
        raise ConfigError("--write-repository serves event-only models (a fused model's frame encoder runs only "
                          "when a frame arrives, which implicit state cannot express); serve it with `flexdet "
                          "serve`, whose python backend runs both graphs")
    metadata, graphs = dynamic_batch_graphs(export_dir, Path(out) / MODEL_NAME / "1")
    proto = onnx.load(str(graphs["model"]))
    types = {value.name: value.type.tensor_type for value in [*proto.graph.input, *proto.graph.output]}
    data_type = _TRITON_TYPES[types[EVENTS_INPUT].elem_type]
    states = [_state(name, data_type, [d.dim_value for d in types[state_input(name)].shape.dim[1:]])
              for name in metadata.state_names]
    inputs = [_tensor(EVENTS_INPUT, data_type, [metadata.input.channels, metadata.height, metadata.width])]
    controls = [_control("START", "CONTROL_SEQUENCE_START"), _control("READY", "CONTROL_SEQUENCE_READY"), _corrid()]
    onnx.save(with_sequence_controls(proto, metadata.state_names), str(graphs["model"]))
    backend = "backend: \"onnxruntime\""
    if accelerator == "tensorrt":
        backend += ("\noptimization { execution_accelerators { gpu_execution_accelerator: [ { name: \"tensorrt\" "
                    "parameters { key: \"precision_mode\" value: \"FP16\" } } ] } }")
    config = _config(MODEL_NAME, backend, options, inputs, _raw_output(graphs["model"]), controls, states, options.max_streams,
                     "KIND_GPU", {METADATA_PARAMETER: metadata.to_json()})
    (Path(out) / MODEL_NAME / "config.pbtxt").write_text(config)
    return Path(out) / MODEL_NAME


def dynamic_batch_graphs(export_dir: os.PathLike[str] | str, folder: Path) -> tuple[DeployMetadata, dict[str, Path]]:
    """Copy the export's graphs into `folder`, re-exported from its checkpoint with a dynamic batch axis when they
    were exported for one stream; (metadata, {"model": path, "frame_encoder": path?})."""
    export = Path(export_dir)
    graph = export / ONNX_NAME
    metadata = _metadata(export)
    folder.mkdir(parents=True, exist_ok=True)
    if metadata.dynamic_batch:
        written = {"model": Path(shutil.copy2(graph, folder / ONNX_NAME))}
        if metadata.frame_encoder:
            written["frame_encoder"] = Path(shutil.copy2(export / metadata.frame_encoder,
                                                         folder / metadata.frame_encoder))
        return metadata, written
    if not (export / CHECKPOINT_NAME).is_file():
        raise CheckpointError(f"{graph} was exported for one stream and {export / CHECKPOINT_NAME} is missing: "
                              "re-export with `flexdet export ... --dynamic-batch`")
    from flexdet.export.onnx_export import export_onnx
    from flexdet.models.checkpoint import load_model

    metadata = copy.deepcopy(metadata)
    written = export_onnx(load_model(export / CHECKPOINT_NAME).model, metadata, folder / ONNX_NAME,
                          opset=metadata.opset, dynamic_batch=True, fp16=metadata.dtype == "float16", device="cpu")
    return metadata, written


def _metadata(export_dir: os.PathLike[str] | str) -> DeployMetadata:
    """The deploy metadata inside the export's step graph."""
    graph = Path(export_dir) / ONNX_NAME
    if not graph.is_file():
        raise CheckpointError(f"{export_dir}: no {ONNX_NAME} here (give a folder written by `flexdet export`)")
    return read_onnx_metadata(graph)


def with_sequence_controls(proto, state_names: list[str]):
    """The step graph with START, READY (int32 (B, 1)) and CORRID (uint64 (B, 1)) inputs, every state input
    multiplied by READY * (1 - START) before use: Triton's control tensors reset a stream inside the graph."""
    from onnx import TensorProto, helper

    graph = proto.graph
    for name, elem in (("START", TensorProto.INT32), ("READY", TensorProto.INT32), ("CORRID", TensorProto.UINT64)):
        graph.input.append(helper.make_tensor_value_info(name, elem, ["batch", 1]))
    dtype = next(i for i in graph.input if i.name == EVENTS_INPUT).type.tensor_type.elem_type
    ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in graph.input}
    nodes = [helper.make_node("Sub", ["READY", "START"], ["flexdet_keep_int"]),
             helper.make_node("Cast", ["flexdet_keep_int"], ["flexdet_keep"], to=dtype)]
    renamed = {}
    for name in state_names:
        source, keep = state_input(name), "flexdet_keep"
        if ranks[source] > 2:  # (B, 1) -> (B, 1, 1, ...) to broadcast over the state's axes
            axes = helper.make_tensor(f"flexdet_axes_{name}", TensorProto.INT64, [ranks[source] - 2],
                                      list(range(2, ranks[source])))
            graph.initializer.append(axes)
            keep = f"flexdet_keep_{name}"
            nodes.append(helper.make_node("Unsqueeze", ["flexdet_keep", axes.name], [keep]))
        nodes.append(helper.make_node("Mul", [source, keep], [f"flexdet_reset_{name}"]))
        renamed[source] = f"flexdet_reset_{name}"
    for node in graph.node:
        for k, value in enumerate(node.input):
            if value in renamed:
                node.input[k] = renamed[value]
    existing = list(graph.node)  # READY - START: 1 for a running step, 0 for a first step (READY = START = 1)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    return proto


def _raw_output(graph: Path) -> str:
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    raw = next(o for o in proto.graph.output if o.name == RAW_OUTPUT)
    return _tensor(RAW_OUTPUT, "TYPE_FP32" if raw.type.tensor_type.elem_type == 1 else "TYPE_FP16",
                   [d.dim_value if d.HasField("dim_value") else -1 for d in raw.type.tensor_type.shape.dim[1:]])


_TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16"}


def _tensor(name: str, data_type: str, dims: list[int], optional: bool = False) -> str:
    extra = " optional: true" if optional else ""
    return f"  {{ name: \"{name}\" data_type: {data_type} dims: [ {', '.join(map(str, dims))} ]{extra} }}"


def _control(name: str, kind: str) -> str:
    return f"    {{ name: \"{name}\" control [ {{ kind: {kind} int32_false_true: [ 0, 1 ] }} ] }}"


def _corrid() -> str:
    return "    { name: \"CORRID\" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }"


def _state(name: str, data_type: str, dims: list[int]) -> str:
    shape = ", ".join(map(str, dims))
    return (f"    {{ input_name: \"{state_input(name)}\" output_name: \"{state_output(name)}\" data_type: {data_type} "
            f"dims: [ {shape} ] initial_state: {{ data_type: {data_type} dims: [ {shape} ] zero_data: true "
            f"name: \"zero\" }} }}")


def _text(value: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _config(name: str, backend: str, options: ServeOptions, inputs: list[str], output: str, controls: list[str],
            states: list[str], candidates: int, kind: str, parameters: dict[str, str]) -> str:
    """config.pbtxt of the sequence-batched model."""
    separator = ",\n"
    state = f"\n  state [\n{separator.join(states)}\n  ]" if states else ""
    params = separator.join(f"  {{ key: {_text(k)} value: {{ string_value: {_text(v)} }} }}"
                            for k, v in parameters.items())
    return (f"name: {_text(name)}\n{backend}\nmax_batch_size: {options.max_batch}\n"
            f"input [\n{separator.join(inputs)}\n]\noutput [\n{output}\n]\n"
            f"sequence_batching {{\n  max_sequence_idle_microseconds: {int(options.idle_timeout_s * 1e6)}\n"
            f"  control_input [\n{separator.join(controls)}\n  ]{state}\n"
            f"  oldest {{ max_candidate_sequences: {candidates} "
            f"max_queue_delay_microseconds: {options.queue_delay_us} }}\n}}\n"
            f"instance_group [ {{ kind: {kind} count: 1 }} ]\nparameters [\n{params}\n]\n")
