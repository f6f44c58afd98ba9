"""A model meets a dataset: the split opened the way the model was trained and the input specification checked
against it, with errors that say what the user can do. Evaluation and FAL's teacher share it."""

from __future__ import annotations

from pathlib import Path

import torch

from flexdet.data.input_spec import InputSpec
from flexdet.datasets.benchmarks import stored_benchmark
from flexdet.datasets.sequences import Dataset, detect_layout, open_dataset
from flexdet.errors import ConfigError
from flexdet.models.checkpoint import LoadedModel


def open_model_dataset(loaded: LoadedModel, source: str | Path, data_root: str | Path, split: str,
                       benchmark: str | None = None) -> Dataset:
    """`split` of `data_root` opened the way the checkpoint `source` was trained (a training checkpoint's layout,
    benchmark and downsample; otherwise the layout's own benchmark: for a model fed by FlexEvent's DSEC pipeline
    on DSEC-Det, FlexEvent's flexevent2 / flexevent8; and the model's own input scale, so an export of a model
    trained at data.downsample 2 is scored at half resolution); `benchmark` overrides. Its class count must be the
    model's."""
    model = loaded.model
    data = (loaded.train_config or {}).get("data", {})
    chosen = benchmark or stored_benchmark(data)
    if chosen == "auto":
        chosen = _flexevent_benchmark(loaded, data_root, data.get("layout", "auto"))
    downsample = int(data.get("downsample", 1))
    try:
        dataset = open_dataset(data_root, split, data.get("layout", "auto"), chosen, downsample)
    except ConfigError as exc:  # a training setting the commands cannot take: say what the user can do instead
        if "data.downsample" not in str(exc):
            raise
        size = "" if loaded.spec is None else f" on {loaded.spec.size[0]}x{loaded.spec.size[1]} inputs"
        frames = " with RGB frames" if model.config.use_frames else ""
        raise ConfigError(f"{exc} (the model was trained at data.downsample {downsample}{size}{frames}; "
                          f"{eval_fit_advice(data_root)})") from exc
    scale = dataset.geometry.scale
    if not data and loaded.spec is not None and loaded.spec.geometry.scale > scale \
            and loaded.spec.geometry.scale % scale == 0:  # no training settings (an export): its own input scale
        dataset.close()
        dataset = open_dataset(data_root, split, "auto", chosen, loaded.spec.geometry.scale // scale)
    if dataset.benchmark.num_classes != model.config.num_classes:
        dataset.close()
        raise ConfigError(f"{source}: the model has {model.config.num_classes} classes but {data_root} is "
                          f"scored with {dataset.benchmark.num_classes} ({dataset.benchmark.name})")
    return dataset


def model_spec(model: torch.nn.Module, dataset: Dataset, spec: InputSpec | None = None) -> InputSpec:
    """The model's input specification on `dataset` (None: the dataset's geometry, bins from the model), refused
    when its size or its RGB frames do not fit the data."""
    if spec is None:
        spec = dataset.input_spec(bins=model.config.bins, dual_windows=model.config.dual_windows)
    if spec.size != dataset.geometry.size or (model.config.use_frames and not dataset.has_frames):
        raise ConfigError(f"{dataset.root}: {model_data_mismatch(spec, model.config.use_frames, dataset)}")
    return spec


def eval_fit_advice(data_root: str | Path) -> str:
    """What a user can do when a model does not fit a dataset (eval has no key=value overrides)."""
    return ("flexdet eval reads data with the settings the model was trained with and takes no key=value overrides: "
            "evaluate the model on data like its training data, or train a model on this data (flexdet train "
            f"--preset quickstart --data {data_root}, with model.inputs=events for data without RGB frames)")


def model_data_mismatch(spec: InputSpec, uses_frames: bool, dataset: Dataset) -> str:
    """Why a model cannot run on a dataset (its input size, RGB frames the data lacks) and what to do instead."""
    problems = []
    if spec.size != dataset.geometry.size:
        geometry = dataset.geometry
        scale = f" ({geometry.sensor_width}x{geometry.kept_height} / {geometry.scale})" \
            if geometry.scale > 1 else ""
        problems.append(f"the model takes {spec.size[0]}x{spec.size[1]} inputs but this data gives "
                        f"{geometry.size[0]}x{geometry.size[1]}{scale}")
    if uses_frames and not dataset.has_frames:
        problems.append("the model expects RGB frames, which this data lacks (events only)")
    return "; ".join(problems) + f". {eval_fit_advice(dataset.root)}"


def _flexevent_benchmark(loaded: LoadedModel, data_root: str | Path, layout: str) -> str:
    """flexevent2 / flexevent8 (FlexEvent's evaluator) for a model with FlexEvent's input pipeline (hashed
    sub-window) on a DSEC-Det root, by its class count (2, or 7 for FlexEvent's 8-class mode); else "auto"."""
    if loaded.spec is None or loaded.spec.sub_window != "hashed" or loaded.model.config.num_classes not in (2, 7):
        return "auto"
    root = Path(data_root)
    if not root.is_dir() or (layout if layout != "auto" else detect_layout(root)) != "dsec":
        return "auto"
    return "flexevent2" if loaded.model.config.num_classes == 2 else "flexevent8"
