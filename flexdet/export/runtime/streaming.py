"""The object users hold: events (+ frame) in, detections out, one step at a time, with the state carried.

The backend (torch / onnxruntime / tensorrt) only runs the network; this class builds the representation
the metadata names, keeps the latest frame, applies score threshold + NMS, and times every stage.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from flexdet.data.representations import stacked_histogram
from flexdet.errors import ConfigError
from flexdet.export.metadata import DeployMetadata
from flexdet.models.postprocess import postprocess

STAGES = ("representation", "inference", "postprocess", "total")


class StreamingRuntime:
    """Streaming detector over one exported model.

    >>> runtime = load_runtime("export_dir", backend="onnxruntime")
    >>> out = runtime.step(events)            # events in [t_end - window_us, t_end), t_end = last t + 1
    >>> out["boxes"], out["scores"], out["labels"], out["raw"]
    """

    def __init__(self, backend: Any, metadata: DeployMetadata, conf_thresh: float | None = None,
                 nms_thresh: float | None = None, max_detections: int | None = None) -> None:
        self.backend = backend
        self.metadata = metadata
        model_config = metadata.model_config
        self.conf_thresh = float(model_config.get("conf_thresh", 0.01) if conf_thresh is None else conf_thresh)
        self.nms_thresh = float(model_config.get("nms_thresh", 0.45) if nms_thresh is None else nms_thresh)
        self.max_detections = int(model_config.get("max_detections", 300) if max_detections is None
                                  else max_detections)
        self.timings: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._last_t_end: int | None = None
        self._resources: list[Any] = []

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def sensor_size(self) -> tuple[int, int]:
        """(height, width) the model was exported for."""
        return self.metadata.height, self.metadata.width

    def reset(self) -> None:
        """Start a new sequence: zero recurrent state, forget the latest frame."""
        self.backend.reset()
        self._last_t_end = None

    def step(self, events: np.ndarray, t_end: int | None = None, frame: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
        """Detect on the events of [t_end - window_us, t_end) (time-sorted EVENT_DTYPE array); `frame` is an
        HxWx3 uint8 RGB image that replaces the kept one. Returns boxes (N, 4) xyxy px, scores, labels, raw."""
        start = time.perf_counter()
        t_end = self._resolve_t_end(events, t_end)
        histogram = self._representation(events, t_end)
        if frame is not None:
            self._check_frame(frame)
        after_repr = time.perf_counter()
        if frame is not None:
            self.backend.encode_frame(np.ascontiguousarray(frame.transpose(2, 0, 1)[None], np.float32) / 255.0)
        raw = self.backend.run(histogram)
        after_infer = time.perf_counter()
        detection = postprocess(raw, self.conf_thresh, self.nms_thresh, self.max_detections)[0]
        result = {"boxes": detection["boxes"].cpu().numpy(), "scores": detection["scores"].cpu().numpy(),
                  "labels": detection["labels"].cpu().numpy(), "raw": raw[0].cpu().numpy()}
        end = time.perf_counter()
        self.timings = {"representation": after_repr - start, "inference": after_infer - after_repr,
                        "postprocess": end - after_infer, "total": end - start}
        return result

    def close(self) -> None:
        """Release temporary files (e.g. a graph exported on the fly for a preset)."""
        for resource in self._resources:
            resource.cleanup()
        self._resources.clear()

    def _resolve_t_end(self, events: np.ndarray, t_end: int | None) -> int:
        if t_end is None:
            if len(events):
                t_end = int(events["t"][-1]) + 1
            elif self._last_t_end is not None:
                t_end = self._last_t_end + self.metadata.window_us
            else:
                t_end = self.metadata.window_us
        self._last_t_end = int(t_end)
        return int(t_end)

    def _representation(self, events: np.ndarray, t_end: int) -> np.ndarray:
        """(1, C, H, W) uint8 stacked histogram(s): the full window, then the half window with dual windows."""
        meta = self.metadata
        windows = (meta.window_us, meta.window_us // 2) if meta.dual_windows else (meta.window_us,)
        planes = [stacked_histogram(events, meta.height, meta.width, meta.bins, t_end - length, t_end, meta.clip)
                  for length in windows]
        return (planes[0] if len(planes) == 1 else np.concatenate(planes))[None]

    def _check_frame(self, frame: np.ndarray) -> None:
        if not self.metadata.use_frames:
            raise ConfigError("this model has no frame branch (exported event-only); call step without frame")
        expected = (self.metadata.height, self.metadata.width, 3)
        if not isinstance(frame, np.ndarray) or frame.shape != expected or frame.dtype != np.uint8:
            got = (getattr(frame, "shape", None), getattr(frame, "dtype", type(frame).__name__))
            raise ConfigError(f"frame must be an RGB uint8 array of shape {expected} (the exported size), got "
                              f"shape {got[0]} dtype {got[1]}")

