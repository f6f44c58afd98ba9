"""flexdet.serving: many cameras against a Triton Inference Server that keeps each stream's recurrent state.

`write_python_repository` / `write_onnx_repository` write the model repository, `TritonServer` runs the server,
`Client(url).stream(id)` steps a stream remotely with the in-process runtime's results. Names load lazily (no
torch or tritonclient on import).
"""

from __future__ import annotations

from flexdet.lazy import lazy_exports

_EXPORTS = {
    "Client": "flexdet.serving.client",
    "ServeOptions": "flexdet.serving.repository",
    "write_python_repository": "flexdet.serving.repository",
    "write_onnx_repository": "flexdet.serving.repository",
    "TritonServer": "flexdet.serving.server",
    "ServerError": "flexdet.serving.errors",
    "StreamLostError": "flexdet.serving.errors",
    "UnreachableError": "flexdet.serving.errors",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
