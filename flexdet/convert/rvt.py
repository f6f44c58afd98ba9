"""RVT (Gehrig & Scaramuzza, CVPR 2023) checkpoints as flexdet models with the same outputs.

RVT's MaxViTRNN + YOLOX PAFPN/head maps one to one onto FlexDetector with the options RVT needs (no
downsample bias, no position conv, no first LayerNorm in the window layer, no spectral filters, BatchNorm
eps 1e-5, unclipped decoding, RVT's postprocess). Weight differences handled here: LayerScale gammas are
folded into the projections they scale, q/k/v rows are regrouped from per-head [q, k, v] to [q; k; v], and
the ConvLSTM gates are reordered from RVT's [f, i, o, g] to flexdet's [i, f, o, g]. SSM's S5-ViT (CVPR 2024)
checkpoints are RVT's with an S5 block in place of each ConvLSTM: detected from their tensors, built with
SSM_OPTIONS and their S5 blocks mapped by flexdet.convert.ssm.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from flexdet.convert import ssm
from flexdet.data.geometry import Geometry
from flexdet.data.input_spec import InputSpec
from flexdet.data.readers.rvt import DOWNSCALE_RULE as RVT_DOWNSCALE
from flexdet.datasets.benchmarks import get_benchmark
from flexdet.errors import CheckpointError
from flexdet.models.checkpoint import bounded_build, load_weights
from flexdet.models.config import ModelConfig
from flexdet.models.detector import FlexDetector
from flexdet.models.safe_unpickle import load_foreign_checkpoint, to_plain

SIZES = {32: "RVT-T", 48: "RVT-S", 64: "RVT-B"}  # embed_dim -> released model
HEAD_DIMS = {32: 32, 48: 24, 64: 32}  # RVT's experiment configs (small uses dim_head 24)
DATASETS = {
    # RVT's dataset name: flexdet's benchmark (classes, sensor), RVT's downscale (it halves 1 Mpx), partition_split_32
    "gen1": ("gen1", 1, 1),
    "gen4": ("1mpx", 2, 2),
}
NUM_CLASSES_TO_DATASET = {2: "gen1", 3: "gen4"}
WINDOW_US, BINS, COUNT_CUTOFF = 50_000, 10, 10  # stacked_histogram_dt=50_nbins=10, count_cutoff 10
CONF_THRESH, EVAL_CONF_THRESH, NMS_THRESH = 0.1, 0.001, 0.45  # rnndet.yaml default; README evaluation


@dataclass
class ConvertedModel:
    """A converted checkpoint: the model (eval mode, weights loaded) and what running it like RVT needs."""

    model: FlexDetector
    source: str
    dataset: str
    class_names: list[str]
    postprocess: dict[str, Any]
    input: dict[str, Any]
    rvt_config: dict[str, Any] = field(default_factory=dict)


def convert_rvt(path: os.PathLike[str] | str) -> ConvertedModel:
    """Read an RVT or SSM S5-ViT Lightning checkpoint without running pickled code, detect the model (ConvLSTM
    or S5 stages), size (T/S/B) and dataset (gen1/gen4) from its weights (and its stored config, when it has
    one) and load it into a FlexDetector."""
    source = os.fspath(path)
    return rvt_from_payload(source, load_foreign_checkpoint(source))


def rvt_from_payload(source: str, payload: dict) -> ConvertedModel:
    """`convert_rvt` on a checkpoint already read by `load_foreign_checkpoint`."""
    state = tensor_dict(source, payload.get("state_dict"))
    if not any(k.startswith("mdl.backbone.") for k in state):
        raise CheckpointError(f"{source}: not an RVT checkpoint (no 'state_dict' with 'mdl.backbone.*' tensors)")
    weights = {k[len("mdl."):]: v for k, v in state.items() if k.startswith("mdl.")}
    rvt_config = _stored_config(source, payload)
    config, dataset = _model_config(source, weights, rvt_config)
    name, downscale, _ = DATASETS[dataset]
    benchmark = get_benchmark(name)
    classes, (sensor_w, sensor_h) = benchmark.class_names, benchmark.sensor_size
    sensor_hw, (height, width) = (sensor_h, sensor_w), (sensor_h // downscale, sensor_w // downscale)
    model = loaded_detector(source, config, lambda: map_state_dict(source, weights, config), "RVT/SSM",
                            (height, width))
    padded = model.padded_size(height, width)
    return ConvertedModel(
        model=model.eval(), source=_sizes(config)[config.widths[0]], dataset=dataset, class_names=list(classes),
        postprocess={"conf_thresh": config.conf_thresh, "eval_conf_thresh": EVAL_CONF_THRESH,
                     "nms_thresh": config.nms_thresh,
                     "rule": "rvt", "max_detections": 0, "ranking": "objectness * class_confidence",
                     "reported_score": "class_confidence", "nms": "per-class (batched)"},
        input={"representation": "stacked_histogram", "time_norm": "events", "end_inclusive": True,
               "bins": BINS, "clip": COUNT_CUTOFF, "window_us": WINDOW_US, "sensor_hw": sensor_hw,
               "downscale": downscale, "input_hw": (height, width), "padded_hw": padded,
               "channel_order": "polarity * bins + bin"},
        rvt_config=rvt_config)


def loaded_detector(source: str, config: ModelConfig, mapped: Callable[[], dict[str, torch.Tensor]], family: str,
                    input_hw: tuple[int, int]) -> FlexDetector:
    """A FlexDetector of `config` holding the state `mapped()` returns, every tensor of both sides used: sized on
    the meta device before it is built (flexdet.models.checkpoint.bounded_build), its padded input at most twice
    the input per side, and any tensor whose shape the mapping cannot take a one-line CheckpointError."""
    try:
        state = mapped()
    except (RuntimeError, ValueError, IndexError, KeyError, TypeError, ArithmeticError) as exc:  # odd shapes, gaps
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source}: {family} tensors flexdet cannot map ({type(exc).__name__}: {first})") \
            from None
    model = bounded_build(source, lambda: FlexDetector(config), state)
    padded = model.padded_size(*input_hw)
    if padded[0] > 2 * input_hw[0] or padded[1] > 2 * input_hw[1]:
        raise CheckpointError(f"{source}: partition_split_32={config.partition_split} pads the {input_hw[1]}x"
                              f"{input_hw[0]} input to {padded[1]}x{padded[0]} (more than twice each side)")
    return load_weights(source, model, state, f"the flexdet model of these {family} tensors")


def tensor_dict(source: str, state: Any) -> dict[str, torch.Tensor]:
    """A checkpoint's weights checked to be a mapping of string names to real tensors with finite values
    (an all-NaN or infinite tensor would convert into a model that finds nothing)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: no 'state_dict' mapping of names to tensors in the checkpoint")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: weight name {key!r} is not a string")
        if not isinstance(value, torch.Tensor) or value.is_complex():
            raise CheckpointError(f"{source}: weight '{key}' is a {type(value).__name__}, not a real tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: weight '{key}' holds NaN or infinite values")
    return state


def input_spec(converted: ConvertedModel) -> InputSpec:
    """The input specification of a converted model: RVT's histograms (bins from the window's first and last
    event, end included); Gen4 keeps the odd rows and columns of the full-resolution histogram, as RVT's
    interpolate(scale_factor=0.5, mode="nearest-exact") does (geometry event_downscale "nearest_exact")."""
    spec = converted.input
    height, width = spec["sensor_hw"]
    geometry = Geometry(width, height, scale=spec["downscale"], event_downscale=RVT_DOWNSCALE)
    return InputSpec(geometry, bins=spec["bins"], clip=spec["clip"], time_norm=spec["time_norm"],
                     end_inclusive=spec["end_inclusive"], window_us=spec["window_us"])


def _stored_config(source: str, payload: dict) -> dict:
    """RVT's merged hydra config when the checkpoint carries one (hyper_parameters.full_config), else {}."""
    hyper = to_plain(payload.get("hyper_parameters") or {}, source)
    full = hyper.get("full_config", hyper) if isinstance(hyper, dict) else {}
    return full if isinstance(full, dict) else {}


def _setting(source: str, config: dict, dotted: str, kind: type, default: Any, low: float, high: float) -> Any:
    """The value at `dotted` of RVT's stored config (default when absent), checked to be a `kind` in
    [low, high]: a one-line CheckpointError naming the key otherwise."""
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return default
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is None or not low <= number <= high or (kind is int and number != int(number)):
        raise CheckpointError(f"{source}: stored config {dotted}={value!r} is not a {kind.__name__} in "
                              f"[{low:g}, {high:g}]")
    return kind(number)


def _model_config(source: str, weights: dict[str, torch.Tensor], rvt_config: dict) -> tuple[ModelConfig, str]:
    num_classes = int(_tensor(source, weights, "yolox_head.cls_preds.0.weight", 4).shape[0])
    name = rvt_config.get("dataset", {}).get("name") if isinstance(rvt_config.get("dataset"), dict) else None
    dataset = name or NUM_CLASSES_TO_DATASET.get(num_classes)
    if not isinstance(dataset, str) or dataset not in DATASETS or \
            get_benchmark(DATASETS[dataset][0]).num_classes != num_classes:
        raise CheckpointError(f"{source}: cannot tell the RVT dataset: {num_classes} classes, config says "
                              f"{dataset!r} (gen1 has 2 classes, gen4 3)")
    options = architecture_options(
        source, weights, _setting(source, rvt_config, "model.backbone.stage.attention.dim_head", int, None, 1, 1024),
        _setting(source, rvt_config, "model.backbone.partition_split_32", int, DATASETS[dataset][2], 1, 64))
    options["conf_thresh"] = _setting(source, rvt_config, "model.postprocess.confidence_threshold", float,
                                      CONF_THRESH, 0.0, 1.0)
    options["nms_thresh"] = _setting(source, rvt_config, "model.postprocess.nms_threshold", float, NMS_THRESH,
                                     0.0, 1.0)
    s5 = ssm.is_s5_vit(weights)
    config = ModelConfig(
        preset=f"{'s5vit' if s5 else 'rvt'}-{SIZES[options['widths'][0]][-1].lower()}-{dataset}", use_frames=False,
        fuse_stages=[False] * 4, **options, **(ssm.SSM_OPTIONS if s5 else {}))
    return config, dataset


def architecture_options(source: str, weights: dict[str, torch.Tensor], head_dim: int | None,
                         partition_split: int) -> dict[str, Any]:
    """ModelConfig fields of RVT's MaxViTRNN + YOLOX PAFPN/head read from its tensors (RVT-layout keys without
    'mdl.'): sizes, RVT's layer options and its post-processing. Shared by RVT, SSM and FlexEvent (whose event
    branch, FPN and head are RVT's)."""
    stem = _tensor(source, weights, "backbone.stages.0.downsample_cf2cl.conv.weight", 4)
    embed_dim, in_channels = int(stem.shape[0]), int(stem.shape[1])
    if embed_dim not in SIZES:
        raise CheckpointError(f"{source}: RVT embed_dim {embed_dim} is none of the released sizes {SIZES}")
    depth = len({m.group(1) for k in weights if (m := re.match(r"fpn\.C3_p4\.m\.(\d+)\.", k))})
    fc1 = _tensor(source, weights, "backbone.stages.0.att_blocks.0.att_window.mlp.net.0.0.weight", 2)
    return dict(
        num_classes=int(_tensor(source, weights, "yolox_head.cls_preds.0.weight", 4).shape[0]),
        use_events=True, in_channels=in_channels, widths=[embed_dim * m for m in (1, 2, 4, 8)],
        attention_stages=[True] * 4, head_dim=int(head_dim or HEAD_DIMS[embed_dim]),
        mlp_ratio=int(fc1.shape[0]) // embed_dim, partition_split=partition_split,
        stem_kernel=int(stem.shape[-1]), downsample_bias=False, position_conv=False, skip_first_norm=True,
        spectral_stages=[False] * 4, neck_depth=depth, bn_eps=1e-5,
        head_width=int(_tensor(source, weights, "yolox_head.stems.0.conv.weight", 4).shape[0]),
        conf_thresh=CONF_THRESH, nms_thresh=NMS_THRESH, max_detections=0, clip_to_input=False,
        postprocess_rule="rvt")


def _sizes(config: ModelConfig) -> dict[int, str]:
    """embed_dim -> released model name of the checkpoint's family."""
    return ssm.SIZES if config.recurrence == "s5" else SIZES


def _tensor(source: str, weights: dict[str, torch.Tensor], key: str, ndim: int | None = None) -> torch.Tensor:
    """weights[key], which must be there (with `ndim` dimensions, when given)."""
    if key not in weights:
        raise CheckpointError(f"{source}: RVT checkpoint lacks 'mdl.{key}'")
    if ndim is not None and weights[key].dim() != ndim:
        raise CheckpointError(f"{source}: 'mdl.{key}' has shape {tuple(weights[key].shape)}, expected {ndim} "
                              "dimensions")
    return weights[key]


_FPN = {"lateral_conv0": "lateral5", "C3_p4": "top_down4", "reduce_conv1": "lateral4", "C3_p3": "top_down3",
        "bu_conv2": "down3", "C3_n3": "bottom_up4", "bu_conv1": "down4", "C3_n4": "bottom_up5"}
_CSP = {"conv1": "branch_main", "conv2": "branch_skip", "conv3": "merge"}
_ATTENTION = {"norm1": "norm1", "norm2": "norm2", "self_attn.qkv": "attn.qkv", "self_attn.proj": "attn.proj",
              "mlp.net.0.0": "mlp.fc1", "mlp.net.2": "mlp.fc2"}


def map_state_dict(source: str, weights: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """RVT (or SSM) YoloXDetector state dict (without 'mdl.') -> FlexDetector state dict; every tensor must be
    used."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    # RVT applies LayerScale in every attention block or in none: one gamma missing is a damaged file
    layer_scale = any(re.match(r"backbone\.stages\.\d+\.att_blocks\.\d+\.att_\w+\.ls[12]\.gamma$", k) for k in weights)

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return _tensor(source, weights, key)

    for i, dim in enumerate(config.widths):
        rvt, fd = f"backbone.stages.{i}.", f"event_backbone.stages.{i}."
        out[fd + "downsample.weight"] = take(rvt + "downsample_cf2cl.conv.weight")
        for p in ("weight", "bias"):
            out[fd + f"norm.{p}"] = take(rvt + f"downsample_cf2cl.norm.{p}")
        for part, name in (("att_window", "window"), ("att_grid", "grid")):
            prefix, target = rvt + f"att_blocks.0.{part}.", fd + f"attention.{name}."
            for src, dst in _ATTENTION.items():
                for p in ("weight", "bias"):
                    key = prefix + f"{src}.{p}"
                    if key in weights:
                        out[target + f"{dst}.{p}"] = take(key)
            heads = dim // config.head_dim
            for p in ("weight", "bias"):  # rows per head [q_h, k_h, v_h] -> [q; k; v]
                qkv = out[target + f"attn.qkv.{p}"]
                if qkv.shape[0] != 3 * dim:
                    raise CheckpointError(f"{source}: 'mdl.{prefix}self_attn.qkv.{p}' has shape {tuple(qkv.shape)}, "
                                          f"expected {3 * dim} rows (q, k, v of width {dim})")
                out[target + f"attn.qkv.{p}"] = qkv.reshape(heads, 3, config.head_dim, -1).transpose(0, 1).reshape(
                    qkv.shape)
            for gamma_key, proj, src in (("ls1.gamma", "attn.proj", "self_attn.proj"),
                                         ("ls2.gamma", "mlp.fc2", "mlp.net.2")):
                if layer_scale or prefix + gamma_key in weights:  # LayerScale: x + g * (W a + b) = x + (g W) a + g b
                    gamma = take(prefix + gamma_key)
                    scaled = (out[target + f"{proj}.weight"], out[target + f"{proj}.bias"])
                    shapes = [tuple(t.shape) for t in (gamma, *scaled)]
                    if shapes[0] != (dim,) or len(shapes[1]) != 2 or shapes[1][0] != dim or shapes[2] != (dim,) \
                            or not all(t.is_floating_point() for t in (gamma, *scaled)):
                        names = ", ".join(f"'mdl.{prefix}{k}'" for k in (gamma_key, f"{src}.weight", f"{src}.bias"))
                        kinds = [str(t.dtype).replace("torch.", "") for t in (gamma, *scaled)]
                        raise CheckpointError(f"{source}: {names} are {kinds} of shapes {shapes}, expected floating "
                                              f"({dim},), ({dim}, n), ({dim},)")
                    out[target + f"{proj}.weight"] = out[target + f"{proj}.weight"] * gamma[:, None]
                    out[target + f"{proj}.bias"] = out[target + f"{proj}.bias"] * gamma
        if config.recurrence == "lstm":
            for p in ("weight", "bias"):  # gates [f, i, o, g] -> [i, f, o, g]
                f_gate, i_gate, o_gate, g_gate = take(rvt + f"lstm.conv1x1.{p}").chunk(4, dim=0)
                out[fd + f"lstm.gates.{p}"] = torch.cat([i_gate, f_gate, o_gate, g_gate], dim=0)
    if config.recurrence == "s5":  # every S5 tensor is checked and placed there
        out.update(ssm.map_s5_stages(source, weights))
        used.update(key for key in weights if ssm.STAGE_KEY.match(key))
    for key in weights:
        if key.startswith("fpn."):
            parts = key.split(".")
            parts[1] = _FPN.get(parts[1], parts[1])
            if parts[2] in _CSP:
                parts[2] = _CSP[parts[2]]
            elif parts[2] == "m":
                parts[2] = "blocks"
            out["neck." + ".".join(parts[1:])] = take(key)
        elif key.startswith("yolox_head."):
            out["head." + key[len("yolox_head."):]] = take(key)
    unused = sorted(set(weights) - used)
    if unused:
        raise CheckpointError(f"{source}: RVT tensors flexdet cannot place (a variant it does not support): "
                              f"{unused[:8]}")
    return {k: v.contiguous() for k, v in out.items()}
