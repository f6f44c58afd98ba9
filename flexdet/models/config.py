"""Model configuration: one dataclass for every option of the detector, presets as packaged YAML files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexdet.config import apply_overrides, load_yaml
from flexdet.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "models"
PRESETS = ("nano", "tiny", "small", "base", "nano-s5", "tiny-s5", "small-s5", "base-s5")
RECURRENCES = ("lstm", "s5")
S5_DISCRETIZATIONS = ("zoh", "bilinear")
FRAME_BACKBONES = ("resnet18", "resnet34", "resnet50")
SPECTRAL_IMPLS = ("fft", "matmul")
POSTPROCESS_RULES = ("flexdet", "rvt")
FRAME_NORMS = ("batch", "frozen")
FUSER_RULES = ("flexdet", "flexevent")

MAX_NECK_DEPTH = 64  # YOLOX's largest PAFPN uses 4 (round(3 x 1.33)); a stored million would take minutes to build


@dataclass
class ModelConfig:
    """Everything that defines a FlexDetector; `build_model(config)` reproduces the same architecture.

    Per-stage lists have 4 entries for the strides 4/8/16/32. The neck reads strides 8/16/32 only, so the
    stride-4 stage can be neither fused nor read by the head.
    """

    preset: str = "custom"
    num_classes: int = 2
    use_frames: bool = True
    # False: a frames-only detector (ResNet + FPN -> PAFPN -> head), the baseline fusion is compared with.
    use_events: bool = True
    in_channels: int = 20
    # Event backbone (RVT-style): widths, which stages have a window+grid attention block.
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    attention_stages: list[bool] = field(default_factory=lambda: [True, True, True, True])
    head_dim: int = 32
    mlp_ratio: int = 4
    # Window = (padded H / 32, padded W / 32) / partition_split; the input is padded to 32 * partition_split.
    partition_split: int = 1
    stem_kernel: int = 7
    # Imported architectures (RVT: false / false / true): bias of the strided downsample convs, depthwise
    # position conv before the attention, and skipping the window attention's first LayerNorm (its input
    # is the downsample's LayerNorm output already).
    downsample_bias: bool = True
    position_conv: bool = True
    skip_first_norm: bool = False
    # Frequency-adaptive filter (AFF-style) after the attention block of the stages marked here.
    spectral_stages: list[bool] = field(default_factory=lambda: [False, False, True, True])
    spectral_impl: str = "fft"
    spectral_groups: int = 4
    spectral_shrink: float = 0.01
    # Frame branch (ResNet + FPN) and FlexFuser gates.
    frame_backbone: str = "resnet18"
    frame_fpn_width: int = 64
    frame_weights: str | None = None
    # "frozen": FrozenBatchNorm (detectron2's FrozenBN, as FlexEvent's frame branch); frame_freeze_at stops
    # gradients into the stem (1) and the first 1..4 residual stages (2..5) like detectron2's FREEZE_AT.
    frame_norm: str = "batch"
    frame_freeze_at: int = 0
    fuse_stages: list[bool] = field(default_factory=lambda: [False, True, True, True])
    fuser_noise: bool = True
    balance_loss_weight: float = 0.01
    # Initial gate logit of events over RGB (0: FlexEvent's 50/50; 2: 88 % events, see models/fusion.py).
    fuser_event_bias: float = 2.0
    # "flexevent": FlexEvent's MoE gate exactly (no bias, no input scaling, noise std softplus + 1e-2).
    fuser_rule: str = "flexdet"
    # Recurrence of every event stage: "lstm" (ConvLSTM) or "s5" (SSM's S5 block, a diagonal state space whose
    # timesteps are rescaled by inference window / s5_train_window_us: FlexDetector.set_window_us).
    recurrence: str = "lstm"
    s5_train_window_us: int = 50_000
    s5_dt_min: float = 0.001
    s5_dt_max: float = 0.1
    s5_discretization: str = "zoh"
    # Anti-aliasing: modes with step * |Im lambda| / 2pi >= s5_bandlimit / 2 start with zero output weights
    # (null: none); s5_bandlimit_dynamic also masks them at every step with the rescaled timestep.
    s5_bandlimit: float | None = 0.5
    s5_bandlimit_dynamic: bool = False
    # Second event view of half the window, same backbone weights, separate LSTM states.
    dual_windows: bool = False
    # YOLOX PAFPN + decoupled head.
    neck_depth: int = 1
    # BatchNorm epsilon of the neck and head (YOLOX 1e-3; RVT keeps PyTorch's 1e-5).
    bn_eps: float = 1e-3
    head_width: int = 64
    iou_weight: float = 5.0
    use_l1: bool = False
    center_radius: float = 2.5
    conf_thresh: float = 0.01
    nms_thresh: float = 0.45
    max_detections: int = 300  # 0: no cap (RVT)
    # Decoded boxes clipped to the input and anchors centred in the padding silenced (RVT does neither).
    clip_to_input: bool = True
    # "flexdet": score = obj * class prob, kept if > conf_thresh. "rvt": kept if obj * max class prob >=
    # conf_thresh, NMS on that product, reported score = the class probability alone (RVT's evaluation).
    postprocess_rule: str = "flexdet"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def pad_multiple(self) -> int:
        """Inputs are zero-padded bottom/right to a multiple of this."""
        return 32 * self.partition_split

    @property
    def bins(self) -> int:
        """Time bins per polarity of the stacked histogram each event view brings (in_channels = 2 x bins)."""
        return self.in_channels // 2

    def validate(self) -> None:
        """Raise ConfigError for values no network can be built from."""
        for name in ("widths", "attention_stages", "spectral_stages", "fuse_stages"):
            if len(getattr(self, name)) != 4:
                raise ConfigError(f"model.{name}: expected 4 entries (strides 4/8/16/32), got {getattr(self, name)}")
        if self.num_classes < 1:
            raise ConfigError(f"model.num_classes: must be >= 1, got {self.num_classes}")
        if self.in_channels < 1:
            raise ConfigError(f"model.in_channels: must be >= 1, got {self.in_channels}")
        if any(w < 1 for w in self.widths):
            raise ConfigError(f"model.widths: must be positive, got {self.widths}")
        if not self.use_events and not (self.use_frames and all(self.fuse_stages[1:])):
            raise ConfigError("model.use_events=false needs use_frames=true and fuse_stages true at strides 8/16/32")
        if self.fuse_stages[0]:
            raise ConfigError("model.fuse_stages: the neck does not read stride 4, so stage 0 cannot be fused")
        if self.spectral_impl not in SPECTRAL_IMPLS:
            raise ConfigError(f"model.spectral_impl: expected one of {SPECTRAL_IMPLS}, got {self.spectral_impl!r}")
        if self.postprocess_rule not in POSTPROCESS_RULES:
            raise ConfigError(f"model.postprocess_rule: expected one of {POSTPROCESS_RULES}, "
                              f"got {self.postprocess_rule!r}")
        if self.max_detections < 0 or self.bn_eps <= 0:
            raise ConfigError(f"model.max_detections must be >= 0 and model.bn_eps > 0, got "
                              f"{self.max_detections} and {self.bn_eps}")
        if self.recurrence not in RECURRENCES:
            raise ConfigError(f"model.recurrence: expected one of {RECURRENCES}, got {self.recurrence!r}")
        if self.s5_discretization not in S5_DISCRETIZATIONS:
            raise ConfigError(f"model.s5_discretization: expected one of {S5_DISCRETIZATIONS}, "
                              f"got {self.s5_discretization!r}")
        if not 0 < self.s5_dt_min <= self.s5_dt_max or self.s5_train_window_us <= 0 or (
                self.s5_bandlimit is not None and self.s5_bandlimit <= 0):
            raise ConfigError(f"model.s5_*: need 0 < s5_dt_min <= s5_dt_max, s5_train_window_us > 0 and "
                              f"s5_bandlimit null or > 0, got {self.s5_dt_min}, {self.s5_dt_max}, "
                              f"{self.s5_train_window_us}, {self.s5_bandlimit}")
        if self.frame_norm not in FRAME_NORMS or self.fuser_rule not in FUSER_RULES or \
                not 0 <= self.frame_freeze_at <= 5:
            raise ConfigError(f"model.frame_norm / fuser_rule / frame_freeze_at: expected one of {FRAME_NORMS}, "
                              f"one of {FUSER_RULES} and 0..5, got {self.frame_norm!r}, {self.fuser_rule!r}, "
                              f"{self.frame_freeze_at}")
        if self.frame_backbone not in FRAME_BACKBONES:
            raise ConfigError(f"model.frame_backbone: expected one of {FRAME_BACKBONES}, got {self.frame_backbone!r}")
        if self.partition_split < 1:
            raise ConfigError(f"model.partition_split: must be >= 1, got {self.partition_split}")
        if not 1 <= self.neck_depth <= MAX_NECK_DEPTH:  # each is a block built module by module: bound the time
            raise ConfigError(f"model.neck_depth: must be in 1..{MAX_NECK_DEPTH}, got {self.neck_depth}")
        for width, spectral in zip(self.widths, self.spectral_stages):
            if spectral and width % self.spectral_groups:
                raise ConfigError(f"model.spectral_groups={self.spectral_groups} does not divide width {width}")


def load_model_config(preset: str, **overrides: Any) -> ModelConfig:
    """Read a preset by name (nano/tiny/small/base) or from a YAML path, then apply keyword overrides."""
    path = PRESET_DIR / f"{preset}.yaml" if preset in PRESETS else Path(preset)
    if preset not in PRESETS and path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"unknown model preset {preset!r}; use one of {PRESETS} or a path to a YAML file")
    config = load_yaml(ModelConfig, path)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown}; known: {sorted(known)}")
    return apply_overrides(config, overrides) if overrides else config
