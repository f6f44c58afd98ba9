"""The simulator's configuration: scene, sensor, frames, labels and dataset, as nested dataclasses.

Presets live as YAML files in flexdet/configs/synth/ (full configs) and flexdet/configs/synth/difficulty/
(override lists applied on top of a preset); `load_preset` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flexdet.config import apply_overrides, from_dict, parse_yaml
from flexdet.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "synth"
CLASS_NAMES = ("car", "pedestrian")


@dataclass
class CameraConfig:
    """Ego-motion: random pan segments (some static) and a slow zoom, in sensor pixels per second."""

    pan_speed_px_s: float = 15.0
    zoom_rate: float = 0.05
    zoom_range: tuple[float, float] = (0.9, 1.15)
    p_static: float = 0.4


@dataclass
class ObjectConfig:
    """How many objects of which classes, and their size as a fraction of the sensor height."""

    count: tuple[int, int] = (1, 4)
    classes: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    car_height: tuple[float, float] = (0.12, 0.22)
    car_aspect: tuple[float, float] = (1.6, 2.4)
    pedestrian_height: tuple[float, float] = (0.22, 0.38)
    pedestrian_aspect: tuple[float, float] = (0.32, 0.45)
    p_enter: float = 0.3
    p_leave: float = 0.2


@dataclass
class MotionConfig:
    """Independent object motion: speed range, segments of cruise / turn / accelerate / stop, scale drift."""

    speed_px_s: tuple[float, float] = (10.0, 60.0)
    pedestrian_speed_factor: float = 0.5
    segment_s: tuple[float, float] = (0.4, 1.5)
    accel_px_s2: float = 80.0
    max_turn_deg_s: float = 60.0
    p_stop: float = 0.15
    scale_rate: float = 0.15
    scale_range: tuple[float, float] = (0.75, 1.35)


@dataclass
class SceneConfig:
    """Sensor geometry, sequence length and the global illumination effects (flicker, exposure drift)."""

    width: int = 256
    height: int = 192
    duration_s: float = 5.0
    camera: CameraConfig = field(default_factory=CameraConfig)
    objects: ObjectConfig = field(default_factory=ObjectConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    texture_contrast: float = 0.5
    flicker_hz: float = 0.0
    flicker_amplitude: float = 0.0
    exposure_drift: float = 0.0


@dataclass
class SensorConfig:
    """ESIM-style DVS pixel: log intensity, per-pixel thresholds with mismatch, refractory, noise."""

    threshold_mean: float = 0.2
    threshold_std: float = 0.03
    threshold_min: float = 0.05
    refractory_us: int = 100
    log_eps: float = 0.01
    noise_rate_hz: float = 0.05
    hot_pixel_fraction: float = 0.0
    hot_pixel_rate_hz: float = 50.0
    dt_min_us: int = 50
    dt_max_us: int = 5000


@dataclass
class FrameConfig:
    """RGB frames: rate, exposure centred on the frame time, motion blur sub-frames, read noise (8-bit units)."""

    rate_hz: float = 20.0
    exposure_ms: float = 8.0
    blur_subframes: int = 4
    noise_std: float = 1.5


@dataclass
class LabelConfig:
    """Which boxes are labels: rate (on frame times), dense period, minimum size and visibility."""

    rate_hz: float = 20.0
    dense_period_us: int = 1000
    min_box_px: float = 4.0
    min_visibility: float = 0.1


@dataclass
class DatasetConfig:
    """Dataset layout and size; sequence i is simulated with a seed derived from (seed, i)."""

    layout: str = "dsec"
    sequences: int = 18
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    workers: int = 1


@dataclass
class SynthConfig:
    """Everything the simulator and the dataset writer need."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    frames: FrameConfig = field(default_factory=FrameConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)

    def __post_init__(self) -> None:
        validate(self)


def validate(config: SynthConfig) -> None:
    """Raise ConfigError on values the simulator cannot honour (before any work starts)."""
    scene, labels, frames = config.scene, config.labels, config.frames
    if scene.width < 16 or scene.height < 16:
        raise ConfigError(f"synthetic sensor size (scene.width x scene.height) {scene.width}x{scene.height} is too small (>= 16x16)")
    if scene.duration_s <= 0:
        raise ConfigError(f"scene.duration_s (--duration) must be positive, got {scene.duration_s}")
    unknown = sorted(set(scene.objects.classes) - set(CLASS_NAMES))
    if unknown or not scene.objects.classes:
        raise ConfigError(f"scene.objects.classes (--classes) must be a non-empty subset of {list(CLASS_NAMES)}, got "
                          f"{scene.objects.classes}")
    low, high = scene.objects.count
    if not 0 <= low <= high:
        raise ConfigError(f"scene.objects.count {scene.objects.count} is not a range 0 <= min <= max")
    if frames.rate_hz <= 0 or labels.rate_hz <= 0:
        raise ConfigError(f"frames.rate_hz and labels.rate_hz must be positive, got {frames.rate_hz} and {labels.rate_hz}")
    ratio = frames.rate_hz / labels.rate_hz
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        raise ConfigError(f"the label rate {labels.rate_hz} Hz must divide the frame rate {frames.rate_hz} Hz "
                          "(labels sit on frame times, like DSEC-Det)")
    if config.sensor.threshold_min <= 0 or config.sensor.threshold_mean <= 0:
        raise ConfigError("sensor.threshold_min and sensor.threshold_mean (contrast thresholds) must be positive")
    if not 0 < config.sensor.dt_min_us <= config.sensor.dt_max_us:
        raise ConfigError("need 0 < sensor.dt_min_us <= sensor.dt_max_us")
    if config.dataset.layout not in ("dsec", "gen1"):
        raise ConfigError(f"dataset.layout (--layout) must be 'dsec' or 'gen1', got {config.dataset.layout!r}")
    split = config.dataset.split
    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise ConfigError(f"dataset.split (--split) must be three non-negative fractions, got {split}")


def preset_names() -> list[str]:
    """Names of the full presets shipped in flexdet/configs/synth/."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str = "quickstart", difficulty: str | None = None) -> SynthConfig:
    """The preset `name` (a shipped name or a YAML path), with a difficulty's overrides applied on top."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESET_DIR / f"{name}.yaml"
    if not path.is_file() and name.endswith((".yaml", ".yml")):
        raise ConfigError(f"{path}: no such synthetic scene file")
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r} (a synthetic scene): shipped are {', '.join(preset_names())}, or give "
                          "a YAML file path")
    config = from_dict(SynthConfig, parse_yaml(path.read_text(), str(path)) or {}, source=str(path))
    if difficulty is not None:
        config = apply_overrides(config, difficulty_overrides(difficulty))
    return config


def difficulty_overrides(difficulty: str) -> dict:
    """The dotted-key overrides that make a scene easy, medium or hard."""
    path = PRESET_DIR / "difficulty" / f"{difficulty}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (PRESET_DIR / "difficulty").glob("*.yaml"))
        raise ConfigError(f"unknown difficulty {difficulty!r}: known are {', '.join(known)}")
    overrides = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: expected a mapping of dotted keys to values")
    return overrides

