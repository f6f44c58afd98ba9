"""Training configuration: one dataclass tree (model, data, augmentation, optimiser, run), YAML recipes in
flexdet/configs/train/, `key=value` overrides from the command line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from flexdet.config import apply_overrides, load_yaml
from flexdet.data.geometry import check_event_downscale
from flexdet.data.input_spec import FRAME_RULES, TIME_NORMS
from flexdet.data.representations.kinds import KINDS
from flexdet.errors import ConfigError
from flexdet.fal.config import FALConfig

RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"
INPUTS = ("fusion", "events", "frames")
LAYOUTS = ("auto", "synthetic", "dsec", "gen1", "rvt")
LABEL_SOURCES = ("auto", "sparse", "pseudo")


@dataclass
class ModelSection:
    """Which detector: a model preset (nano/tiny/small/base or a YAML path), which inputs, extra options, and
    `init`, a training checkpoint whose weights the run starts from (the FAL student starts from its teacher)."""

    preset: str = "nano"
    inputs: str = "fusion"
    options: dict[str, Any] = field(default_factory=dict)
    init: str | None = None


@dataclass
class DataConfig:
    """Where the data is and how training clips are made from it.

    benchmark "auto" picks synthetic (dataset.yaml), dsec2 (DSEC-Det) or gen1 from the layout. `downsample`
    divides the resolution further (on top of the benchmark's own scale); `event_downscale` is how events reach
    the smaller input (`flexdet.data.geometry.Geometry`): "bin" (x // scale), "nearest_exact" (RVT's 1 Mpx
    halving: the sampled sensor pixel of each block only) or "auto" (RVT's stored 640x360 windows:
    nearest_exact, which they are; otherwise bin). Clips are `clip_steps` steps at one
    of `rates_hz` (window = 1/rate); `stream_fraction` of each batch are streaming clips (state carried).
    `representation` (stacked_histogram, voxel_grid, time_surface or event_frame), `bins`, `clip`, `time_norm`
    ("window" or RVT's "events"), `end_inclusive` (RVT: the event at the window end counts) define the event
    input and `frame_rule` which RGB frame a window is paired with
    (`flexdet.data.input_spec.InputSpec`; label-aligned training windows get the same frame under both rules, so
    "latest_before_end" only changes what off-label windows, and the checkpoint's runtime and demo, pair).
    `labels`: "auto" (dense ground truth where the data has it), "sparse" (the label file's instants only, what
    a real dataset offers) or "pseudo" (label file + pseudo_tracks.npy, FAL student). `clip_align`: clip
    starts are multiples of it, so with a 2x grid every batch step is all-GT or all-pseudo. `clip_end`: "any"
    or "labelled" (random clips end on a labelled step: with several rates and sparse labels, a window ending
    at a label instant is labelled whatever its length, and every random clip then carries a loss).
    """

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"protocol": "benchmark"}  # the name in flexdet 0.1.0 checkpoints

    layout: str = "auto"
    benchmark: str = "auto"
    train_split: str = "train"
    val_split: str = "val"
    downsample: int = 1
    event_downscale: str = "auto"
    representation: str = "stacked_histogram"
    bins: int = 10
    clip: int = 10
    time_norm: str = "window"
    frame_rule: str = "latest_at_start"
    end_inclusive: bool = False
    rates_hz: list[float] = field(default_factory=lambda: [20.0])
    clip_steps: int = 11
    batch_size: int = 8
    stream_fraction: float = 0.5
    cache: str = "memory"
    cache_dir: str | None = None
    labels: str = "auto"
    clip_align: int = 1
    clip_end: str = "any"


@dataclass
class AugmentConfig:
    """Augmentation drawn once per clip and applied to events, frames and boxes alike."""

    hflip: float = 0.5
    zoom_in_prob: float = 0.3
    zoom_in_max: float = 1.5
    zoom_out_prob: float = 0.2
    zoom_out_max: float = 1.2


@dataclass
class OptimConfig:
    """AdamW + one-cycle schedule (1 % warm-up, end at lr / final_div), gradient clipping, fp16 on GPU."""

    lr: float = 2e-4
    weight_decay: float = 1e-3
    steps: int = 400_000
    warmup_pct: float = 0.01
    final_div: float = 1e4
    grad_clip: float = 1.0
    amp: bool = True


@dataclass
class RunConfig:
    """Bookkeeping: seed, checkpoint and log periods, threads (0 = torch default), device (auto/cpu/cuda)."""

    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    threads: int = 0
    device: str = "auto"
    progress: bool = True


@dataclass
class TrainConfig:
    """A full training recipe; `fal` holds the FAL thresholds and the student's loss weights, lr and steps."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    fal: FALConfig = field(default_factory=FALConfig)

    def __post_init__(self) -> None:
        validate(self)


MAX_RATE_HZ = 1e6  # one window per microsecond, the resolution of event times


def validate(config: TrainConfig) -> None:
    """Raise ConfigError on values no training run can use."""
    data, optim = config.data, config.optim
    if config.model.inputs not in INPUTS:
        raise ConfigError(f"model.inputs must be one of {INPUTS}, got {config.model.inputs!r}")
    if data.layout not in LAYOUTS:
        raise ConfigError(f"data.layout must be one of {LAYOUTS}, got {data.layout!r}")
    if data.labels not in LABEL_SOURCES:
        raise ConfigError(f"data.labels must be one of {LABEL_SOURCES}, got {data.labels!r}")
    if data.clip_end not in ("any", "labelled"):
        raise ConfigError(f"data.clip_end must be 'any' or 'labelled', got {data.clip_end!r}")
    if data.clip_align < 1 or data.clip_steps % data.clip_align:
        raise ConfigError(f"data.clip_align must be >= 1 and divide data.clip_steps ({data.clip_steps}), "
                          f"got {data.clip_align}")
    check_event_downscale(data.event_downscale)
    if data.time_norm not in TIME_NORMS:
        raise ConfigError(f"data.time_norm must be one of {TIME_NORMS}, got {data.time_norm!r}")
    if data.representation not in KINDS:
        raise ConfigError(f"data.representation must be one of {KINDS}, got {data.representation!r}")
    if data.frame_rule not in FRAME_RULES:
        raise ConfigError(f"data.frame_rule must be one of {FRAME_RULES}, got {data.frame_rule!r}")
    if not 1 <= data.clip <= 255:
        raise ConfigError(f"data.clip must be in [1, 255], got {data.clip}")
    if data.cache not in ("memory", "disk", "none"):
        raise ConfigError(f"data.cache must be memory, disk or none, got {data.cache!r}")
    if data.batch_size < 1 or data.clip_steps < 1 or data.downsample < 1 or data.bins < 1:
        raise ConfigError("data.batch_size, data.clip_steps, data.downsample and data.bins must be >= 1")
    if not data.rates_hz or min(data.rates_hz) <= 0:
        raise ConfigError(f"data.rates_hz must be positive rates, got {data.rates_hz}")
    if max(data.rates_hz) > MAX_RATE_HZ:
        raise ConfigError(f"data.rates_hz: {max(data.rates_hz):g} Hz gives windows shorter than the 1 µs resolution "
                          f"of event times (at most {MAX_RATE_HZ:g} Hz)")
    if not 0.0 <= data.stream_fraction <= 1.0:
        raise ConfigError(f"data.stream_fraction must be in [0, 1], got {data.stream_fraction}")
    if optim.steps < 1:
        raise ConfigError(f"optim.steps must be >= 1, got {optim.steps}")
    if optim.lr <= 0:
        raise ConfigError(f"optim.lr must be positive, got {optim.lr}")
    if config.augment.zoom_in_max < 1 or config.augment.zoom_out_max < 1:
        raise ConfigError("augment.zoom_in_max and zoom_out_max are factors >= 1")
    if config.run.checkpoint_every < 1 or config.run.log_every < 1:
        raise ConfigError("run.checkpoint_every and run.log_every must be >= 1")


def recipe_names() -> list[str]:
    """Names of the recipes shipped in flexdet/configs/train/."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_train_config(config: str | None = None, preset: str | None = None,
                      overrides: list[str] | None = None) -> TrainConfig:
    """A recipe from a YAML file (`config`) or by name (`preset`), then `key=value` overrides."""
    if config and preset:
        raise ConfigError("give either a config file or a preset, not both")
    if config:
        loaded = load_yaml(TrainConfig, config)
    elif preset:
        path = RECIPE_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown training preset {preset!r}; shipped: {recipe_names()}")
        loaded = load_yaml(TrainConfig, path)
    else:
        loaded = TrainConfig()
    return apply_overrides(loaded, _parse_overrides(overrides)) if overrides else loaded


# What may change when a run resumes: bookkeeping only (the schedule, data and model are the run's own).
RESUMABLE_KEYS = ("run.progress", "run.log_every", "run.checkpoint_every", "run.threads")


def resume_config(saved: dict, overrides: list[str] | None = None, source: str = "checkpoint") -> TrainConfig:
    """The configuration a run was saved with, plus `overrides` that only change bookkeeping; an override that
    would change the run (schedule, data, model) is refused with the names of the keys."""
    from flexdet.config import from_dict, to_dict

    base = from_dict(TrainConfig, saved, source=f"{source}:config")
    config = apply_overrides(base, _parse_overrides(overrides)) if overrides else base
    before, after = _flatten(to_dict(base)), _flatten(to_dict(config))
    changed = sorted(k for k in after if after[k] != before.get(k) and k not in RESUMABLE_KEYS)
    if changed:
        raise ConfigError(f"--resume continues the run as it was saved; these overrides would change it: "
                          f"{', '.join(changed)} (start a new run with another --out, or --overwrite)")
    return config


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "options":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`key=value` items as a mapping; numbers in exponent form (3e-3, which YAML 1.1 reads as text) become floats."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        try:
            parsed[key.strip()] = float(value) if re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", value.strip()) \
                else value
        except ValueError:
            parsed[key.strip()] = value
    return parsed
