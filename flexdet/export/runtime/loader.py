"""`load_runtime(path, backend)`: find the artifacts behind a path (export folder, .onnx, .pt, .engine or a
preset name), produce the ones the backend needs that are missing, and wrap the backend in a StreamingRuntime."""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexdet.config import to_dict
from flexdet.errors import CheckpointError, ConfigError, FormatError
from flexdet.export.bundle import CHECKPOINT_NAME, ENGINE_SUFFIX, METADATA_NAME, ONNX_NAME
from flexdet.export.metadata import DeployMetadata, check_agreement, read_onnx_metadata
from flexdet.export.runtime.streaming import StreamingRuntime

BACKENDS = ("torch", "onnxruntime", "tensorrt", "auto")
_MODEL_OPTS = ("height", "width", "num_classes", "use_frames", "seed", "window_us", "classes")
_RUNTIME_OPTS = ("conf_thresh", "nms_thresh", "max_detections")


@dataclass
class Artifacts:
    """What a path gives: deploy metadata and whichever of model / checkpoint / ONNX / engine exist."""

    metadata: DeployMetadata | None = None
    metadata_source: str = "metadata"
    model: Any = None
    onnx: Path | None = None
    engine: Path | None = None
    checkpoint: Path | None = None
    cpu: tuple[Path, dict] | None = None  # `flexdet export --target cpu`'s model and session settings

    def sibling(self, base: Path | None, suffix: str) -> Path | None:
        """The frame encoder beside `base` (fused models only), with `suffix`."""
        if base is None or self.metadata is None or not self.metadata.frame_encoder:
            return None
        return base.with_name(Path(self.metadata.frame_encoder).stem + suffix)


def load_runtime(path: os.PathLike[str] | str, backend: str = "auto", device: str | None = None,
                 **opts: Any) -> StreamingRuntime:
    """A StreamingRuntime for `path` on `backend`.

    Options: height, width, num_classes, use_frames, seed, window_us, classes (presets and checkpoints without
    deploy metadata); conf_thresh, nms_thresh, max_detections; torch: compile, cuda_graphs, half;
    onnxruntime: intra_op_num_threads, graph_optimization_level, providers.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not one of {BACKENDS}")
    if device is not None and str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: this machine has no usable CUDA device (use cpu)")
    model_opts = {k: opts.pop(k) for k in _MODEL_OPTS if k in opts}
    runtime_opts = {k: opts.pop(k) for k in _RUNTIME_OPTS if k in opts}
    artifacts = resolve_artifacts(path, **model_opts)
    backend = _choose_backend(backend, device)
    resources: list[tempfile.TemporaryDirectory] = []
    if backend == "torch":
        if artifacts.model is None:
            raise CheckpointError(f"{path}: the torch backend needs the checkpoint ({CHECKPOINT_NAME}) beside the "
                                  "exported graph")
        from flexdet.export.runtime.torch_backend import TorchBackend

        engine = TorchBackend(artifacts.model, artifacts.metadata, device=device, **opts)
    elif backend == "onnxruntime":
        onnx_path = artifacts.onnx or _export_temporary(artifacts, resources, device)
        if artifacts.cpu is not None and _on_cpu(device, opts):
            onnx_path, session = artifacts.cpu
            opts = {**session, **opts}  # the caller's own settings win
        from flexdet.export.runtime.onnx_backend import OnnxRuntimeBackend

        engine = OnnxRuntimeBackend(onnx_path, artifacts.metadata, artifacts.sibling(onnx_path, ".onnx"), **opts)
    else:
        engine_path = artifacts.engine or _build_temporary_engine(artifacts, resources, device, opts)
        from flexdet.export.runtime.tensorrt_backend import TensorRTBackend

        engine = TensorRTBackend(engine_path, artifacts.metadata, artifacts.sibling(engine_path, ENGINE_SUFFIX),
                                 device=device)
    runtime = StreamingRuntime(engine, artifacts.metadata, **runtime_opts)
    runtime._resources.extend(resources)
    return runtime


def resolve_artifacts(path: os.PathLike[str] | str, height: int | None = None, width: int | None = None,
                      num_classes: int = 2, use_frames: bool = False, seed: int = 0, window_us: int = 50_000,
                      classes: list[str] | None = None) -> Artifacts:
    """Artifacts of an export folder, a .onnx / .engine / .pt file, or a preset name (random seeded weights;
    height / width / window_us / classes apply to presets only: an artefact's input specification says them)."""
    from flexdet.models.config import PRESETS

    text = os.fspath(path)
    file = Path(text)
    if text in PRESETS and not file.exists():
        from flexdet.export.metadata import metadata_for_model
        from flexdet.models.builder import random_preset

        model, spec = random_preset(text, num_classes, use_frames, seed, height or 240, width or 304, window_us)
        return Artifacts(metadata_for_model(model, spec, classes), model=model)
    if not file.exists():
        raise CheckpointError(f"{file}: no such file or directory (nor a preset name: {PRESETS})")
    if file.is_dir():
        return _resolve_directory(file)
    suffix = file.suffix.lower()
    if suffix == ".onnx":
        return _with_checkpoint(Artifacts(read_onnx_metadata(file), str(file), onnx=file),
                                file.with_name(CHECKPOINT_NAME))
    if suffix in (ENGINE_SUFFIX, ".plan"):
        json_path = file.with_name(METADATA_NAME)
        return _with_checkpoint(Artifacts(_metadata_json(json_path), str(json_path), engine=file),
                                file.with_name(CHECKPOINT_NAME))
    return _from_checkpoint(file)


def _agreed_metadata(artifacts: Artifacts, json_path: Path | None) -> None:
    """Set the deploy metadata from metadata.json and / or the ONNX file's entry, refused when both exist and
    differ (flexdet.export.metadata.check_agreement)."""
    copies = {}
    if json_path is not None:
        copies[str(json_path)] = _metadata_json(json_path)
    if artifacts.onnx is not None:
        copies[str(artifacts.onnx)] = read_onnx_metadata(artifacts.onnx)
    check_agreement({name: to_dict(metadata) for name, metadata in copies.items()})
    artifacts.metadata_source, artifacts.metadata = next(iter(copies.items()))
    # An export without model.pt: bounded here as load_model bounds a model.pt's own specification.
    artifacts.metadata.input.check_size(artifacts.metadata_source)


def _resolve_directory(folder: Path) -> Artifacts:
    onnx_path, engine_path = folder / ONNX_NAME, (folder / ONNX_NAME).with_suffix(ENGINE_SUFFIX)
    from flexdet.export.cpu import read_cpu_choice

    artifacts = Artifacts(onnx=onnx_path if onnx_path.is_file() else None,
                          engine=engine_path if engine_path.is_file() else None)
    if artifacts.onnx is not None:
        artifacts.cpu = read_cpu_choice(folder)
    if (folder / METADATA_NAME).is_file() or artifacts.onnx is not None:
        _agreed_metadata(artifacts, folder / METADATA_NAME if (folder / METADATA_NAME).is_file() else None)
    if (folder / CHECKPOINT_NAME).is_file():
        if artifacts.metadata is None:  # a folder holding only model.pt (e.g. from flexdet convert)
            return _from_checkpoint(folder / CHECKPOINT_NAME)
        return _with_checkpoint(artifacts, folder / CHECKPOINT_NAME)
    if artifacts.metadata is None:
        raise CheckpointError(f"{folder}: no {ONNX_NAME}, {METADATA_NAME} or {CHECKPOINT_NAME} here (not a "
                              "folder written by `flexdet export`)")
    return artifacts


def _with_checkpoint(artifacts: Artifacts, checkpoint: Path) -> Artifacts:
    """Attach the torch model from `checkpoint` when the file exists; its input specification and classes
    must agree with the metadata's."""
    if checkpoint.is_file():
        from flexdet.models.checkpoint import load_model

        loaded = load_model(checkpoint)
        if artifacts.metadata is not None:
            stored = {"input": to_dict(loaded.spec) if loaded.spec is not None else {}, "classes": loaded.classes}
            check_agreement({artifacts.metadata_source: to_dict(artifacts.metadata), str(checkpoint): stored},
                            fields=("input", "classes"))
        artifacts.model = loaded.model
        artifacts.checkpoint = checkpoint
    return artifacts


def _from_checkpoint(file: Path) -> Artifacts:
    from flexdet.export.metadata import metadata_for_model
    from flexdet.models.checkpoint import load_model

    loaded = load_model(file)
    return Artifacts(metadata_for_model(loaded.model, loaded.require_spec(), loaded.classes), model=loaded.model,
                     checkpoint=file)


def _metadata_json(path: Path) -> DeployMetadata:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (an engine needs the {METADATA_NAME} written beside it by export)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(path, f"not UTF-8 text ({exc.reason})", offset=exc.start) from None
    return DeployMetadata.from_json(text, source=str(path))


def _on_cpu(device: str | None, opts: dict) -> bool:
    """Whether an onnxruntime session will run on the CPU (no CUDA device asked for, CPU provider only)."""
    providers = opts.get("providers") or ["CPUExecutionProvider"]
    return not str(device or "cpu").startswith("cuda") and list(providers) == ["CPUExecutionProvider"]


def _choose_backend(backend: str, device: str | None) -> str:
    """'auto' -> tensorrt when it imports and CUDA is there, torch on any other CUDA device, else onnxruntime."""
    if backend != "auto":
        return backend
    import torch

    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if cuda:
        try:
            import tensorrt  # noqa: F401
            return "tensorrt"
        except ImportError:
            return "torch"
    return "onnxruntime"


def _export_temporary(artifacts: Artifacts, resources: list, device: str | None) -> Path:
    """Export the in-memory model to a temporary folder owned by the runtime (presets, bare checkpoints)."""
    if artifacts.model is None:
        raise FormatError("model", "no ONNX graph and no checkpoint to export one from")
    from flexdet.export.onnx_export import export_onnx

    folder = tempfile.TemporaryDirectory(prefix="flexdet-export-")
    resources.append(folder)
    metadata = copy.deepcopy(artifacts.metadata)
    written = export_onnx(artifacts.model, metadata, Path(folder.name) / ONNX_NAME, device="cpu")
    artifacts.metadata = metadata
    return written["model"]


def _build_temporary_engine(artifacts: Artifacts, resources: list, device: str | None, opts: dict) -> Path:
    """Build model.engine (+ frame_encoder.engine) into a temporary folder owned by the runtime."""
    from flexdet.export.tensorrt_build import build_engine, import_tensorrt

    import_tensorrt()
    onnx_path = artifacts.onnx or _export_temporary(artifacts, resources, device)
    folder = tempfile.TemporaryDirectory(prefix="flexdet-engine-")
    resources.append(folder)
    fp16 = bool(opts.pop("fp16", False))
    engine = build_engine(onnx_path, Path(folder.name) / ("model" + ENGINE_SUFFIX), fp16=fp16)
    encoder = artifacts.sibling(onnx_path, ".onnx")
    if encoder is not None:
        build_engine(encoder, Path(folder.name) / (encoder.stem + ENGINE_SUFFIX), fp16=fp16)
    return engine
