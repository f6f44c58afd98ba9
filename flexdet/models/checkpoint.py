"""The one checkpoint loader: any flexdet artefact (training checkpoint, model checkpoint `model.pt`, export
folder, or an ONNX / engine file with its `model.pt` beside it) -> the model, its input specification, its
class names and, for training checkpoints, the training configuration. Files are read with
`torch.load(weights_only=True)`, so no checkpoint can run code; the format tag picks the reader.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flexdet.atomic import atomic_path
from flexdet.data.clock import window_of
from flexdet.data.geometry import Geometry
from flexdet.data.input_spec import InputSpec
from flexdet.datasets.benchmarks import get_benchmark, stored_benchmark
from flexdet.errors import CheckpointError, FlexdetError

TRAIN_FORMAT = "flexdet-train-checkpoint-1"
MODEL_FORMAT = "flexdet.checkpoint"
MODEL_VERSION = 2
MODEL_FILE = "model.pt"


@dataclass
class LoadedModel:
    """What a flexdet artefact holds: model (eval mode), input specification (None only for a training
    checkpoint of an early flexdet that recorded no input size), class names, and for a training checkpoint
    its training config (plain data), dataset info and the step it was saved at."""

    def require_spec(self) -> InputSpec:
        """The input specification, or a CheckpointError saying it is unknown."""
        if self.spec is None:
            raise CheckpointError(f"{self.path}: this checkpoint records no input specification (input size "
                                  "unknown); evaluate or pseudo-label it on its dataset, or retrain")
        return self.spec

    model: torch.nn.Module
    spec: InputSpec | None
    classes: list[str]
    path: Path
    train_config: dict | None = None
    dataset: dict = field(default_factory=dict)
    step: int | None = None


def read_torch_file(path: os.PathLike[str] | str, what: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; a missing file, a file torch did not write or one holding pickled
    objects raises a one-line CheckpointError (`what` names what was expected)."""
    from flexdet.models.safe_unpickle import check_members

    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"{file}: {what} not found")
    try:  # torch >= 1.6 zips only: a legacy pickle's declared storage sizes are allocated before reading
        with zipfile.ZipFile(file) as archive:
            check_members(archive, str(file))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        raise CheckpointError(f"{file} is not a {what} (not a zip file written by torch.save)") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing a file
            warnings.simplefilter("ignore")
            return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{file} is not a {what} (it holds pickled Python objects other than "
                              "tensors and containers, which are not loaded since loading would run code)") from None
    except Exception as exc:  # torch / pickle / zipfile raise many types for truncated or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{file}: not a readable {what} ({type(exc).__name__}: {first[:200]})") from None


def model_from_state(source: os.PathLike[str] | str, config: dict, state: dict) -> torch.nn.Module:
    """A FlexDetector in eval mode built from a stored ModelConfig mapping and loaded with `state`."""
    from flexdet.config import from_dict
    from flexdet.models import ModelConfig, build_model

    try:
        model_config = from_dict(ModelConfig, {**config, "frame_weights": None}, source=f"{source}:model_config")
    except FlexdetError as exc:
        raise CheckpointError(f"{source}: invalid model config ({exc})") from None
    model = bounded_build(source, lambda: build_model(model_config, model_config.num_classes,
                                                      model_config.use_frames), state)
    return load_weights(source, model, state, "the stored model config").eval()


def bounded_build(source: os.PathLike[str] | str, build: Callable[[], torch.nn.Module],
                  state: dict) -> torch.nn.Module:
    """`build()` once on the meta device (no memory) to size it, then for real: a model whose weights need
    more than twice the bytes `state` holds (half-precision files) plus 1 MiB is refused before allocating."""
    tensors = [t for t in (state.values() if isinstance(state, dict) else ()) if isinstance(t, torch.Tensor)]
    stored = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())
    try:
        with torch.device("meta"):
            sizing = build()
        needed = sum(t.numel() * t.element_size() for t in (*sizing.parameters(), *sizing.buffers()))
        if needed > 2 * stored + 2**20:
            raise CheckpointError(f"{source}: the model config describes {needed / 2**20:.1f} MiB of weights "
                                  f"but the checkpoint holds {stored / 2**20:.1f} MiB")
        return build()
    except (FlexdetError, ValueError, TypeError, ArithmeticError, RuntimeError, IndexError, KeyError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{source}: invalid model config ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})") from None


def load_weights(source: os.PathLike[str] | str, model: torch.nn.Module, state: Any, what: str) -> torch.nn.Module:
    """`model` with `state` loaded, checked first: the same keys (names of missing / unexpected ones), each
    a tensor of the parameter's shape and kind (floating or not), floating values finite."""
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise CheckpointError(f"{source}: the weights are not a mapping of names to tensors")
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not match {what}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for key, target in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.is_complex() or \
                value.is_floating_point() != target.is_floating_point():
            kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{source}: weights do not match {what}: '{key}' is {kind}, expected {target.dtype}")
        if value.shape != target.shape:
            raise CheckpointError(f"{source}: weights do not match {what}: '{key}' has shape "
                                  f"{tuple(value.shape)}, expected {tuple(target.shape)}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: weight '{key}' holds NaN or infinite values")
    model.load_state_dict(state)
    return model


def save_model(path: os.PathLike[str] | str, model: torch.nn.Module, spec: InputSpec,
               classes: list[str] | None = None) -> Path:
    """Write `model.pt`: model config, weights, input specification and class names, atomically."""
    from flexdet.config import to_dict

    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "model_config": to_dict(model.config),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "input": to_dict(spec), "classes": class_names(model, classes)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def class_names(model: torch.nn.Module, classes: Any, source: str = "class names") -> list[str]:
    """`classes` (None, or a list of strings) checked against the model's class count, or class_0 ..
    class_{K-1}; `source` names where they came from in the error."""
    count = model.config.num_classes
    if classes is not None and not (isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{source}: class names must be a list of strings, got {classes!r:.80}")
    names = list(classes) if classes else [f"class_{k}" for k in range(count)]
    if len(names) != count:
        raise CheckpointError(f"{source}: {len(names)} class names given for a model with {count} classes")
    return names


def run_checkpoint(run_dir: os.PathLike[str] | str) -> Path:
    """Where a training run folder keeps its last checkpoint (the trainer writes it, `load_model` reads it)."""
    return Path(run_dir) / "checkpoints" / "last.pt"


def load_model(path: os.PathLike[str] | str, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load any flexdet artefact (a run folder means its last checkpoint); CheckpointError names the file and what
    is wrong."""
    file = Path(path)
    if file.is_dir():
        last = run_checkpoint(file)
        file = last if last.is_file() and not (file / MODEL_FILE).exists() else file / MODEL_FILE
    elif file.suffix.lower() in (".onnx", ".engine", ".plan"):
        file = file.with_name(MODEL_FILE)
    payload = read_torch_file(file, "flexdet/RVT checkpoint", map_location)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{file} is not a flexdet/RVT checkpoint (it holds a {type(payload).__name__}, not a "
                              "checkpoint dict)")
    tag = payload.get("format")
    if tag in (TRAIN_FORMAT, MODEL_FORMAT):
        loaded = (_training_checkpoint if tag == TRAIN_FORMAT else _model_checkpoint)(file, payload)
        if loaded.spec is not None:  # the input its runtime allocates: bounded by a real sensor, not by the file
            loaded.spec.check_size(str(file))
        return loaded
    raise CheckpointError(f"{file}: not a flexdet checkpoint (format tag {tag!r}); RVT and other published "
                          "checkpoints are read with `flexdet convert`")


def read_training_checkpoint(path: os.PathLike[str] | str, map_location: str | torch.device = "cpu") -> dict:
    """The whole payload of a training checkpoint (for resuming), checked for the keys a resume reads."""
    file = Path(path)
    payload = read_torch_file(file, "flexdet training checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"{file}: not a flexdet training checkpoint (format tag missing)")
    for key in ("model", "config", "step", "model_config"):
        if key not in payload:
            raise CheckpointError(f"{file}: checkpoint lacks '{key}'")
    return payload


def _training_checkpoint(file: Path, payload: dict) -> LoadedModel:
    for key in ("model", "config", "model_config"):
        if key not in payload:
            raise CheckpointError(f"{file}: checkpoint lacks '{key}'")
    model = model_from_state(file, payload["model_config"], payload["model"])
    dataset = payload.get("dataset") or {}
    if not isinstance(dataset, dict):
        raise CheckpointError(f"{file}: 'dataset' is not a mapping")
    spec = _stored_spec(file, payload) or _legacy_training_spec(model, payload["config"], dataset)
    return LoadedModel(model, spec, class_names(model, dataset.get("classes"), str(file)), file, payload["config"],
                       dataset, payload.get("step"))


def _model_checkpoint(file: Path, payload: dict) -> LoadedModel:
    state, config = payload.get("state_dict"), payload.get("model_config")
    if not isinstance(state, dict) or not isinstance(config, dict):
        raise CheckpointError(f"{file}: no model config and state_dict in the checkpoint (keys: {sorted(payload)})")
    model = model_from_state(file, config, state)
    deploy = payload.get("deploy") if isinstance(payload.get("deploy"), dict) else {}
    spec = _stored_spec(file, payload) or _legacy_deploy_spec(file, model, deploy)
    classes = payload["classes"] if payload.get("classes") is not None else deploy.get("classes")
    return LoadedModel(model, spec, class_names(model, classes, str(file)), file)


def _stored_spec(file: Path, payload: dict) -> InputSpec | None:
    from flexdet.config import from_dict

    stored = payload.get("input")
    if stored is None:
        return None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{file}: 'input' is not an input specification")
    try:
        return from_dict(InputSpec, stored, source=f"{file}:input")
    except FlexdetError as exc:
        raise CheckpointError(f"{file}: invalid input specification ({exc})") from None


def _legacy_training_spec(model: torch.nn.Module, config: dict, dataset: dict) -> InputSpec | None:
    """Checkpoints written before the input specification: the benchmark's geometry at the stored input size,
    bins from the data config, window = 1 / first training rate (None when no input size was stored)."""
    data = config.get("data", {}) if isinstance(config, dict) else {}
    if len(dataset.get("input_size") or ()) != 2:
        return None
    width, height = (int(v) for v in dataset["input_size"])
    scale = int(data.get("downsample") or 1)
    if stored_benchmark(dataset) in ("dsec2", "dsec8"):
        dsec = get_benchmark(stored_benchmark(dataset))
        geometry = Geometry(*dsec.sensor_size, dsec.crop_height, dsec.scale * scale)
    else:
        geometry = Geometry(width * scale, height * scale, None, scale)
    rates = data.get("rates_hz") or [20.0]
    return InputSpec(geometry, bins=int(data.get("bins") or model.config.bins),
                     window_us=window_of(rates[0]), dual_windows=bool(model.config.dual_windows))


def _legacy_deploy_spec(file: Path, model: torch.nn.Module, deploy: dict) -> InputSpec:
    """Model checkpoints written before the input specification: the deploy metadata's size, no geometry."""
    from flexdet.data.input_spec import legacy_spec

    spec = legacy_spec(deploy, dual_windows=bool(model.config.dual_windows))
    if spec is None:
        raise CheckpointError(f"{file}: checkpoint has neither an input specification nor deploy metadata")
    return spec
