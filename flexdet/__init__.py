"""flexdet: real-time object detection with event cameras, fused with an RGB camera when there is one."""

from flexdet.errors import FlexdetError

__version__ = "0.1.0"

__all__ = ["FlexdetError", "__version__"]
