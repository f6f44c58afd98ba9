"""Streaming inference over an exported model: `load_runtime(path, backend)` -> StreamingRuntime."""

from flexdet.export.runtime.loader import BACKENDS, load_runtime, resolve_artifacts
from flexdet.export.runtime.streaming import STAGES, StreamingRuntime

__all__ = ["BACKENDS", "STAGES", "StreamingRuntime", "load_runtime", "resolve_artifacts"]
