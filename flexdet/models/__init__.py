"""flexdet.models: the FlexDetector network (event backbone, frame branch, FlexFuser, PAFPN, YOLOX head).

Names load lazily so `import flexdet.models` does not import torch until a model is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_model": "flexdet.models.builder",
    "ModelConfig": "flexdet.models.config",
    "load_model_config": "flexdet.models.config",
    "FlexDetector": "flexdet.models.detector",
    "postprocess": "flexdet.models.postprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flexdet.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
