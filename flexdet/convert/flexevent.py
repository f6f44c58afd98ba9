"""FlexEvent (NeurIPS 2025) checkpoints as flexdet models with the same outputs.

FlexEvent's released DSEC-Det files (scripts/export_weights.py: a flat {key: tensor} dict) hold an RVT-B event
branch (`mdl.rvt_block.*`, RVT's `backbone.stages.*`), RVT's PAFPN (`mdl.rvt_fpn.*`) and YOLOX head, a
detectron2 ResNet-50 FPN frame branch (`mdl.rgb_backbone.*`) and per stage an `embedder` (1x1 conv, FPN level ->
stage width) and a `moe_conv_layer` (the gate). In flexdet terms: RVT's layers (flexdet.convert.rvt), dual
windows (both event views through the same stages, separate LSTM states, fused maps averaged), a torchvision
ResNet-50 with FrozenBatchNorm (detectron2's STRIDE_IN_1X1 false is torchvision's stride placement) and FPN
(sum fuse, nearest 2x), and FlexFusers with FlexEvent's gate rule. Left out, with outputs unchanged: the fusion
at stage 1 and the FPN's stride-4 level (p2) that only feeds it, since FlexEvent's PAFPN reads stages 2-4 and
its LSTMs and next stages take the unfused maps (maxvit_rnn.py), so nothing downstream sees them.
"""

from __future__ import annotations

import os
import re

import torch

from flexdet.convert import rvt
from flexdet.data.input_spec import InputSpec
from flexdet.datasets.benchmarks import get_benchmark
from flexdet.errors import CheckpointError
from flexdet.models.config import ModelConfig
from flexdet.models.safe_unpickle import load_foreign_checkpoint

# data/dsec_utils/class_config.py: model classes per class mode (the 8-class mode has 7 outputs: DSEC's
# eighth class, train, has no boxes); the 2-class mode scores bus and truck as car.
CLASS_MODES = {2: ("2class", ["car", "pedestrian"]),
               7: ("8class", ["pedestrian", "rider", "car", "bus", "truck", "bicycle", "motorcycle"])}
# config/dataset/dsec.yaml and data/dsec_utils/dsec_data.py: 640x480 sensor, top 430 rows, halved -> 320x215,
# DSEC-Det's frame (the dsec2 benchmark's geometry: events pre-halved by integrate-and-fire, frames bicubic);
# dual_frequency: a sub-window of ratio 0.5 placed by a hash seeded with 42 at evaluation.
GEOMETRY = get_benchmark("dsec2").geometry(event_downscale="integrate_fire", frame_resize="cubic")
SUB_WINDOW_RATIO, SUB_WINDOW_SEED = 0.5, 42
PIXEL_MEAN, PIXEL_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # rnndet.yaml, RGB, 0-255
_RESNET_STAGES = {"res2": "layer1", "res3": "layer2", "res4": "layer3", "res5": "layer4"}
_FPN_LEVELS = {"3": 0, "4": 1, "5": 2}  # p3..p5 -> torchvision FPN blocks of layer2..layer4
# Stage 1's gate and p2 (no output depends on them) and the gate's Normal(mean, std) constants, used only by
# MoEConv's load estimate when K < M (FlexEvent has K = M = 2).
_UNUSED = re.compile(r"^(rgb_backbone\.fpn_(lateral|output)2\.|rvt_block\.0\.(embedder|moe_conv_layer)\.|"
                     r"rvt_block\.\d\.moe_conv_layer\.(mean|std)$)")


def is_flexevent(state: dict) -> bool:
    """Whether a checkpoint's tensors are FlexEvent's (RVT stages under `rvt_block`, a detectron2 frame branch)."""
    keys = [k[len("mdl."):] if k.startswith("mdl.") else k for k in state if isinstance(k, str)]
    return any(k.startswith("rvt_block.") for k in keys) and any(k.startswith("rgb_backbone.") for k in keys)


def convert_flexevent(path: os.PathLike[str] | str) -> rvt.ConvertedModel:
    """Read a FlexEvent checkpoint without running pickled code, detect its class mode (2 or 7 outputs) and sizes
    from the tensors and load it into a FlexDetector that runs FlexEvent's network."""
    source = os.fspath(path)
    return flexevent_from_payload(source, load_foreign_checkpoint(source))


def flexevent_from_payload(source: str, payload: dict) -> rvt.ConvertedModel:
    """`convert_flexevent` on a checkpoint already read by `load_foreign_checkpoint`."""
    state = rvt.tensor_dict(source, payload.get("state_dict", payload))
    if not is_flexevent(state):
        raise CheckpointError(f"{source}: not a FlexEvent checkpoint (no 'mdl.rvt_block.*' and "
                              "'mdl.rgb_backbone.*' tensors)")
    weights = {(k[len("mdl."):] if k.startswith("mdl.") else k): v for k, v in state.items()}
    config = model_config(source, weights)
    mode, classes = CLASS_MODES[config.num_classes]
    width, height = GEOMETRY.size
    model = rvt.loaded_detector(source, config, lambda: map_state_dict(source, weights, config), "FlexEvent",
                                (height, width))
    return rvt.ConvertedModel(
        model=model.eval(), source=f"FlexEvent ({mode})", dataset="dsec", class_names=list(classes),
        postprocess={"conf_thresh": rvt.CONF_THRESH, "eval_conf_thresh": rvt.EVAL_CONF_THRESH,
                     "nms_thresh": rvt.NMS_THRESH, "rule": "rvt", "max_detections": 0,
                     "ranking": "objectness * class_confidence", "reported_score": "class_confidence",
                     "nms": "per-class (batched)"},
        input={"representation": "stacked_histogram", "time_norm": "events", "end_inclusive": False,
               "bins": rvt.BINS, "clip": rvt.COUNT_CUTOFF, "window_us": rvt.WINDOW_US,
               "sensor_hw": (GEOMETRY.sensor_height, GEOMETRY.sensor_width), "downscale": GEOMETRY.scale, "input_hw": (height, width), "padded_hw": model.padded_size(height, width),
               "channel_order": "polarity * bins + bin", "sub_window": "hashed",
               "sub_window_ratio": SUB_WINDOW_RATIO, "sub_window_seed": SUB_WINDOW_SEED,
               "frame": "previous annotated frame, top 430 rows, bicubic to 320x215"})


def input_spec() -> InputSpec:
    """FlexEvent's DSEC pipeline: events pre-halved by integrate-and-fire (its downsample_events.py, DAGr's
    rule), rows below 215 dropped, RVT's histograms over [start, end) binned by the window's first and last event;
    the second view FlexEvent's hashed half window; the frame cropped and resized bicubically. Windows end on the
    millisecond grid of the halved file's time origin, as FlexEvent's reads through ms_to_idx do."""
    return InputSpec(GEOMETRY, bins=rvt.BINS, clip=rvt.COUNT_CUTOFF, time_norm="events", end_inclusive=False,
                     window_us=rvt.WINDOW_US, dual_windows=True, sub_window="hashed",
                     sub_window_ratio=SUB_WINDOW_RATIO, sub_window_seed=SUB_WINDOW_SEED, end_grid_us=1000)


def model_config(source: str, weights: dict[str, torch.Tensor]) -> ModelConfig:
    """The FlexDetector options of a FlexEvent checkpoint: RVT's layers at the sizes its tensors have, dual
    windows, ResNet-50 + FPN(256) with FrozenBN, frozen up to res2, FlexEvent's gates at strides 8-32."""
    options = rvt.architecture_options(source, _rvt_layout(weights), None, 1)
    if options["num_classes"] not in CLASS_MODES:
        raise CheckpointError(f"{source}: a FlexEvent head with {options['num_classes']} classes is neither the "
                              "2-class nor the 8-class (7 outputs) DSEC-Det model")
    fpn_width = int(rvt._tensor(source, weights, "rgb_backbone.fpn_lateral3.weight", 4).shape[0])
    if "rgb_backbone.bottom_up.res4.5.conv1.weight" not in weights or \
            "rgb_backbone.bottom_up.res4.6.conv1.weight" in weights:
        raise CheckpointError(f"{source}: the frame branch is not detectron2's ResNet-50 (res4 has 6 blocks there)")
    mode = CLASS_MODES[options["num_classes"]][0]
    size = rvt.SIZES[options["widths"][0]][-1].lower()
    return ModelConfig(preset=f"flexevent-{size}-dsec-{mode}", use_frames=True, dual_windows=True,
                       frame_backbone="resnet50", frame_fpn_width=fpn_width, frame_norm="frozen", frame_freeze_at=2,
                       fuse_stages=[False, True, True, True], fuser_rule="flexevent", fuser_event_bias=0.0,
                       **options)


def map_state_dict(source: str, weights: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """FlexEvent tensors (keys without 'mdl.') -> FlexDetector state dict; every tensor is placed or named in
    `_UNUSED`."""
    out = rvt.map_state_dict(source, _rvt_layout(weights), config)  # refuses any RVT-part tensor it cannot place
    used = {k for k in weights if _rvt_key(k)}
    for key, value in weights.items():
        target = _frame_key(key) or _fuser_key(key)
        if target is not None:
            out[target] = value.t() if target.endswith(("gate.weight", "noise.weight")) else value
            used.add(key)
        elif _UNUSED.match(key):
            used.add(key)
    unplaced = sorted(set(weights) - used)
    if unplaced:
        raise CheckpointError(f"{source}: FlexEvent tensors flexdet cannot place (a variant it does not support): "
                              f"{unplaced[:8]}")
    return {k: v.float().contiguous() if v.is_floating_point() else v for k, v in out.items()}


def _rvt_layout(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """FlexEvent's event branch, FPN and head under RVT's names (utils/initialization.py's RVT_PREFIXES)."""
    return {_rvt_key(key): value for key, value in weights.items() if _rvt_key(key)}


def _rvt_key(key: str) -> str | None:
    """RVT's name of a FlexEvent event-branch, FPN or head tensor (None: the frame branch, a gate or unknown)."""
    if key.startswith("rvt_block.") and not re.search(r"\.(embedder|moe_conv_layer)\.", key):
        return "backbone.stages." + key[len("rvt_block."):]
    if key.startswith("rvt_fpn."):
        return "fpn." + key[len("rvt_fpn."):]
    return key if key.startswith("yolox_head.") else None


def _frame_key(key: str) -> str | None:
    """detectron2 ResNet/FPN key -> FlexDetector frame_backbone key (None: not a placed frame-branch tensor)."""
    if m := re.match(r"^rgb_backbone\.bottom_up\.stem\.conv1\.(norm\.)?(\w+)$", key):
        return f"frame_backbone.body.{'bn1' if m.group(1) else 'conv1'}.{m.group(2)}"
    if m := re.match(r"^rgb_backbone\.bottom_up\.(res\d)\.(\d+)\.(conv\d|shortcut)\.(norm\.)?(\w+)$", key):
        stage, block, conv, norm, tensor = m.groups()
        if conv == "shortcut":
            name = f"downsample.{1 if norm else 0}"
        else:
            name = f"bn{conv[-1]}" if norm else conv
        return f"frame_backbone.body.{_RESNET_STAGES[stage]}.{block}.{name}.{tensor}"
    if (m := re.match(r"^rgb_backbone\.fpn_(lateral|output)(\d)\.(weight|bias)$", key)) and m.group(2) in _FPN_LEVELS:
        blocks = "inner_blocks" if m.group(1) == "lateral" else "layer_blocks"
        return f"frame_backbone.fpn.{blocks}.{_FPN_LEVELS[m.group(2)]}.0.{m.group(3)}"
    return None


def _fuser_key(key: str) -> str | None:
    """Stage i's embedder / gate (i = 1..3) -> fusers.{i}.project / gate / noise (gate matrices transposed)."""
    m = re.match(r"^rvt_block\.([123])\.(embedder\.(weight|bias)|moe_conv_layer\.(w_gate|w_noise))$", key)
    if m is None:
        return None
    stage = m.group(1)
    if m.group(3):
        return f"fusers.{stage}.project.{m.group(3)}"
    return f"fusers.{stage}.{'gate' if m.group(4) == 'w_gate' else 'noise'}.weight"

