"""What a deployed model needs besides its weights: classes, representation, window, sensor size, state names.

Stored as JSON in the ONNX file's metadata_props (key `flexdet`) and beside the weights in `model.pt`, so a
runtime rebuilds exactly the input the network was trained on from any exported artifact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from flexdet import __version__
from flexdet.config import from_dict, to_dict
from flexdet.errors import ConfigError, FormatError

METADATA_KEY = "flexdet"
EVENT_NORMALISATION = "stacked histogram counts saturated at `clip`, as float32 (no scaling)"
FRAME_NORMALISATION = "RGB uint8 / 255 -> [0, 1]; ImageNet mean/std applied inside the network"


@dataclass
class DeployMetadata:
    """Everything a runtime needs to turn events (and frames) into the network's inputs and back."""

    height: int
    width: int
    classes: list[str] = field(default_factory=lambda: ["car", "pedestrian"])
    representation: str = "stacked_histogram"
    bins: int = 10
    clip: int = 10
    window_us: int = 50_000
    use_frames: bool = False
    dual_windows: bool = False
    state_names: list[str] = field(default_factory=list)
    event_normalisation: str = EVENT_NORMALISATION
    frame_normalisation: str = FRAME_NORMALISATION
    dtype: str = "float32"
    dynamic_batch: bool = False
    opset: int = 17
    frame_encoder: str | None = None
    model_config: dict = field(default_factory=dict)
    flexdet_version: str = __version__

    def __post_init__(self) -> None:
        if self.representation != "stacked_histogram":
            raise ConfigError(f"runtime representation {self.representation!r}: only stacked_histogram is supported")
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"sensor size must be positive, got {self.height}x{self.width}")
        if self.window_us < 1 or self.bins < 1:
            raise ConfigError(f"window_us and bins must be >= 1, got {self.window_us}, {self.bins}")

    def to_json(self) -> str:
        """Compact JSON text of every field."""
        return json.dumps(to_dict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "metadata") -> DeployMetadata:
        """Parse JSON written by `to_json`; a clear FormatError when it is not."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(source, f"flexdet metadata is not valid JSON ({exc.msg})", offset=exc.pos) from None
        if not isinstance(data, dict):
            raise FormatError(source, "flexdet metadata is not a JSON object")
        return from_dict(cls, data, source=source)


def metadata_for_model(model: Any, height: int, width: int, classes: list[str] | None = None,
                       window_us: int = 50_000, **fields: Any) -> DeployMetadata:
    """Metadata of a FlexDetector deployed at (height, width); classes default to class_0..class_{K-1}."""
    config = model.config
    names = list(classes) if classes else [f"class_{k}" for k in range(config.num_classes)]
    if len(names) != config.num_classes:
        raise ConfigError(f"{len(names)} class names given for a model with {config.num_classes} classes")
    if config.in_channels % 2:
        raise ConfigError(f"model.in_channels={config.in_channels} is not 2 * bins of a stacked histogram")
    return DeployMetadata(height=height, width=width, classes=names, bins=config.in_channels // 2,
                          window_us=window_us, use_frames=config.use_frames, dual_windows=config.dual_windows,
                          state_names=model.state_names(), model_config=to_dict(config), **fields)


def write_onnx_metadata(model_proto: Any, metadata: DeployMetadata) -> None:
    """Set (or replace) the `flexdet` entry of an onnx.ModelProto's metadata_props."""
    for prop in list(model_proto.metadata_props):
        if prop.key == METADATA_KEY:
            model_proto.metadata_props.remove(prop)
    entry = model_proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = metadata.to_json()


def read_onnx_metadata(path: os.PathLike[str] | str) -> DeployMetadata:
    """The DeployMetadata stored in an ONNX file's metadata_props; FormatError if absent or unreadable."""
    import onnx

    try:
        proto = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others for non-ONNX bytes
        raise FormatError(path, f"not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return DeployMetadata.from_json(prop.value, source=os.fspath(path))
    raise FormatError(path, f"no '{METADATA_KEY}' entry in the ONNX metadata_props (not written by flexdet export)")
