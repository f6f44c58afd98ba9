"""flexdet.export: ONNX / TensorRT export of a FlexDetector and a streaming runtime over torch, onnxruntime or
TensorRT. Names load lazily so `import flexdet.export` stays cheap (no torch, no onnx)."""

from __future__ import annotations

from flexdet.lazy import lazy_exports

_EXPORTS = {
    "DeployMetadata": "flexdet.export.metadata",
    "metadata_for_model": "flexdet.export.metadata",
    "read_onnx_metadata": "flexdet.export.metadata",
    "export_onnx": "flexdet.export.onnx_export",
    "export_bundle": "flexdet.export.bundle",
    "build_engine": "flexdet.export.tensorrt_build",
    "load_runtime": "flexdet.export.runtime",
    "StreamingRuntime": "flexdet.export.runtime",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
