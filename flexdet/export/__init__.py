"""flexdet.export: ONNX / TensorRT export of a FlexDetector and a streaming runtime over torch, onnxruntime or
TensorRT. Names load lazily so `import flexdet.export` stays cheap (no torch, no onnx)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DeployMetadata": "flexdet.export.metadata",
    "metadata_for_model": "flexdet.export.metadata",
    "read_onnx_metadata": "flexdet.export.metadata",
    "save_checkpoint": "flexdet.export.checkpoint",
    "load_checkpoint": "flexdet.export.checkpoint",
    "export_onnx": "flexdet.export.onnx_export",
    "export_bundle": "flexdet.export.bundle",
    "build_engine": "flexdet.export.tensorrt_build",
    "load_runtime": "flexdet.export.runtime",
    "StreamingRuntime": "flexdet.export.runtime",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flexdet.export' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
