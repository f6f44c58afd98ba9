"""ONNX -> TensorRT engine with TensorRT 10's Python API (OnnxParser, BuilderConfig, optimisation profile).

Every graph input (events and each recurrent state tensor) gets a profile entry, because TensorRT needs
shapes for all of them; with a dynamic batch the profile spans 1..max_batch, otherwise it is fixed.
"""

from __future__ import annotations

import os
from pathlib import Path

from flexdet.atomic import atomic_write_bytes
from flexdet.errors import FlexdetError, FormatError, MissingDependencyError


def import_tensorrt():
    """The `tensorrt` module, or MissingDependencyError saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError("tensorrt", "TensorRT engines",
                                     "pip install tensorrt on a machine with an NVIDIA GPU and CUDA") from None
    return tensorrt


def build_engine(onnx_path: os.PathLike[str] | str, engine_path: os.PathLike[str] | str, fp16: bool = False,
                 dynamic_batch: bool = False, max_batch: int = 8, workspace_gib: float = 4.0) -> Path:
    """Parse `onnx_path`, build a serialized engine (fp16 kernels allowed when `fp16`) and write it atomically."""
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FormatError(onnx_path, f"TensorRT cannot parse the ONNX graph ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shape = list(tensor.shape)
        if dynamic_batch:
            low, high = [1] + shape[1:], [max_batch] + shape[1:]
            profile.set_shape(tensor.name, low, low, high)
        else:
            fixed = [1 if dim < 0 else dim for dim in shape]
            profile.set_shape(tensor.name, fixed, fixed, fixed)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FlexdetError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above)")
    atomic_write_bytes(engine_path, bytes(serialized))
    return Path(engine_path)
