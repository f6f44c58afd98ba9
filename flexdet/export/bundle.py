"""`flexdet export` as a function: one folder with model.pt, model.onnx (+ frame_encoder.onnx), metadata.json
and, on request, TensorRT engines."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from flexdet.atomic import atomic_write_text
from flexdet.export.metadata import DeployMetadata
from flexdet.export.onnx_export import export_onnx
from flexdet.models.checkpoint import MODEL_FILE, save_model

CHECKPOINT_NAME = MODEL_FILE
ONNX_NAME = "model.onnx"
METADATA_NAME = "metadata.json"
ENGINE_SUFFIX = ".engine"


def export_bundle(model: nn.Module, metadata: DeployMetadata, out_dir: os.PathLike[str] | str, opset: int = 17,
                  fp16: bool = False, dynamic_batch: bool = False, engine: bool = False,
                  device: str | None = None) -> dict[str, Path]:
    """Write every deployable artifact of `model` into `out_dir`; returns {artifact: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = export_onnx(model, metadata, out / ONNX_NAME, opset=opset, dynamic_batch=dynamic_batch, fp16=fp16,
                          device=device)
    written["checkpoint"] = save_model(out / CHECKPOINT_NAME, model, metadata.input, metadata.classes)
    atomic_write_text(out / METADATA_NAME, metadata.to_json() + "\n")
    written["metadata"] = out / METADATA_NAME
    if engine:
        from flexdet.export.tensorrt_build import build_engine

        for name in ("model", "frame_encoder"):
            if name in written:
                written[f"{name}_engine"] = build_engine(written[name], written[name].with_suffix(ENGINE_SUFFIX),
                                                         fp16=fp16, dynamic_batch=dynamic_batch)
    return written
