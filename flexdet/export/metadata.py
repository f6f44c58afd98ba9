"""What a deployed model needs besides its weights: the input specification, classes, state names.

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
from flexdet.data.input_spec import InputSpec, legacy_spec
from flexdet.errors import ConfigError, FormatError

METADATA_KEY = "flexdet"
_LEGACY_INPUT_KEYS = ("height", "width", "representation", "bins", "clip", "window_us", "dual_windows",
                      "event_normalisation", "frame_normalisation")


@dataclass
class DeployMetadata:
    """Everything a runtime needs besides the weights: the input specification (sensor geometry,
    representation, window), class names, whether frames are read, the state tensors and how the graph was
    exported. The graph's spatial size is the specification's input size."""

    input: InputSpec
    classes: list[str] = field(default_factory=lambda: ["car", "pedestrian"])
    use_frames: bool = False
    state_names: list[str] = field(default_factory=list)
    dtype: str = "float32"
    dynamic_batch: bool = False
    opset: int = 17
    frame_encoder: str | None = None
    model_config: dict = field(default_factory=dict)
    flexdet_version: str = __version__

    @property
    def height(self) -> int:
        """Input (graph) height."""
        return self.input.size[1]

    @property
    def width(self) -> int:
        """Input (graph) width."""
        return self.input.size[0]

    @property
    def window_us(self) -> int:
        return self.input.window_us

    def to_json(self) -> str:
        """Compact JSON text of every field."""
        return json.dumps(to_dict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "metadata") -> DeployMetadata:
        """Parse JSON written by `to_json` (or by flexdet before the input specification existed)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(source, f"flexdet metadata is not valid JSON ({exc.msg})", offset=exc.pos) from None
        if not isinstance(data, dict):
            raise FormatError(source, "flexdet metadata is not a JSON object")
        if "input" not in data:
            data = _legacy(data, source)
        return from_dict(cls, data, source=source)


def _legacy(data: dict, source: str) -> dict:
    """Metadata written before the input specification: an identity geometry at the exported size."""
    spec = legacy_spec({key: data.pop(key) for key in _LEGACY_INPUT_KEYS if key in data})
    if spec is None:
        raise FormatError(source, "flexdet metadata has neither 'input' nor 'height'/'width'")
    return {**data, "input": to_dict(spec)}


def metadata_for_model(model: Any, spec: InputSpec, classes: list[str] | None = None, **fields: Any
                       ) -> DeployMetadata:
    """Metadata of a FlexDetector fed by `spec`; classes default to class_0..class_{K-1}."""
    from flexdet.models.checkpoint import class_names

    config = model.config
    if spec.channels != config.in_channels * (2 if config.dual_windows else 1) or \
            spec.dual_windows != config.dual_windows:
        raise ConfigError(f"input specification gives {spec.channels} channels ({spec.representation}, bins "
                          f"{spec.bins}, dual windows "
                          f"{spec.dual_windows}) but the model reads {config.in_channels} per view "
                          f"(dual windows {config.dual_windows})")
    return DeployMetadata(input=spec, classes=class_names(model, classes), use_frames=config.use_frames,
                          state_names=model.state_names(), model_config=to_dict(config), **fields)


def check_agreement(copies: dict[str, dict[str, Any]], fields: tuple[str, ...] | None = None) -> None:
    """Refuse an export whose copies of the deploy fields (metadata.json, the ONNX file's entry, model.pt)
    differ: a CheckpointError naming both files and the first field that differs. `copies` maps a file to the
    to_dict form of what it stores; `fields` restricts the comparison to those top-level fields."""
    from flexdet.errors import CheckpointError

    absent = "<absent>"
    flat = {name: _flat({k: v for k, v in tree.items() if fields is None or k in fields})
            for name, tree in copies.items()}
    (first, left), *others = flat.items()
    for name, right in others:
        for key in sorted(left.keys() | right.keys()):
            if left.get(key, absent) != right.get(key, absent):
                raise CheckpointError(f"{first} and {name} disagree on {key} ({left.get(key, absent)!r} vs "
                                      f"{right.get(key, absent)!r}): refusing an export whose copies differ; "
                                      "export it again")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted key: value}, lists compared whole; the flexdet version is not compared."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif key != "flexdet_version":
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


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
