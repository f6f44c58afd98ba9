"""flexdet.models: the FlexDetector network (event backbone, frame branch, FlexFuser, PAFPN, YOLOX head).

Names load lazily so `import flexdet.models` does not import torch until a model is used.
"""

from __future__ import annotations

from flexdet.lazy import lazy_exports

_EXPORTS = {
    "build_model": "flexdet.models.builder",
    "ModelConfig": "flexdet.models.config",
    "load_model_config": "flexdet.models.config",
    "FlexDetector": "flexdet.models.detector",
    "postprocess": "flexdet.models.postprocess",
    "load_model": "flexdet.models.checkpoint",
    "save_model": "flexdet.models.checkpoint",
    "LoadedModel": "flexdet.models.checkpoint",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
