"""The stepper: the one object that drives a detector through a stream, whatever feeds it.

The backend (torch / onnxruntime / tensorrt) only runs the network. This class builds the step's input with
the model's input specification (`InputSpec.model_inputs`), hands frames to the frame branch when a new one
arrives, applies score threshold + NMS, maps boxes back to sensor pixels and times every stage. The runtime
and the demo call `step` with sensor events; evaluation and pseudo-labelling call `step_inputs` with inputs
they built in batches through the same specification, for several sequences side by side.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any

import numpy as np
import torch

from flexdet.data.geometry import CameraFit
from flexdet.errors import ConfigError
from flexdet.export.metadata import DeployMetadata
from flexdet.models.postprocess import postprocess

STAGES = ("representation", "inference", "postprocess", "total")


class StreamingRuntime:
    """Streaming detector over one model.

    >>> runtime = load_runtime("runs/export", backend="onnxruntime")
    >>> out = runtime.step(events)            # sensor events of [t_end - window_us, t_end), t_end = last t + 1
    >>> out["boxes"], out["scores"], out["labels"], out["raw"]     # boxes xyxy in sensor pixels
    """

    def __init__(self, backend: Any, metadata: DeployMetadata, conf_thresh: float | None = None,
                 nms_thresh: float | None = None, max_detections: int | None = None) -> None:
        self.backend = backend
        self.metadata = metadata
        self.spec = metadata.input
        model_config = metadata.model_config
        self.conf_thresh = float(model_config.get("conf_thresh", 0.01) if conf_thresh is None else conf_thresh)
        self.nms_thresh = float(model_config.get("nms_thresh", 0.45) if nms_thresh is None else nms_thresh)
        self.max_detections = int(model_config.get("max_detections", 300) if max_detections is None
                                  else max_detections)
        self.rule = str(model_config.get("postprocess_rule", "flexdet"))
        self.timings: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.frame_encodes = 0  # how many times the frame encoder ran (a new frame arrived), over the runtime's life
        self.camera: CameraFit | None = None
        self._last_t_end: int | None = None
        self.sequence = ""
        self._halving = _StreamHalving(self.spec) if self.spec.geometry.event_downscale == "integrate_fire" else None
        self._resources: list[Any] = []

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.metadata.height, self.metadata.width

    @property
    def sensor_size(self) -> tuple[int, int]:
        """(height, width) of the sensor (or fitted camera) whose events `step` takes."""
        if self.camera is not None:
            return self.camera.camera_height, self.camera.camera_width
        width, height = self.spec.sensor_size
        return height, width

    def fit_camera(self, width: int, height: int) -> str | None:
        """Take events and frames of a width x height camera from now on; a camera of another size than the
        model's sensor is letterboxed onto it (`CameraFit`), and the rule is returned as a note."""
        if (int(width), int(height)) == self.spec.sensor_size:
            self.camera = None
            return None
        self.camera = CameraFit(int(width), int(height), *self.spec.sensor_size)
        return self.camera.describe()

    def reset(self, batch_size: int = 1, sequence: str = "") -> None:
        """Start new sequences: zero recurrent state for `batch_size` streams side by side, no frame yet.
        `sequence` names the stream for `step` (the "hashed" sub-window of FlexEvent models draws from it)."""
        self.backend.reset(batch_size)
        self._last_t_end = None
        self.sequence = sequence
        if self._halving is not None:
            self._halving = _StreamHalving(self.spec)

    @property
    def state(self) -> Any:
        """A copy of the recurrent state, to fork a stream from (`restore`)."""
        return copy.copy(self.backend.state)

    def restore(self, state: Any, keep_frame: bool = False) -> None:
        """Continue from a state taken with `state`; `keep_frame`: with the frame maps held now instead of the
        state's own, so a schedule switching between states encodes each frame once."""
        restored = copy.copy(state)
        if keep_frame:
            if not hasattr(self.backend, "frame_keys"):
                raise ConfigError(f"the {self.backend_name} backend cannot switch recurrent states; use torch or "
                                  f"onnxruntime")
            for key in self.backend.frame_keys():
                restored[key] = self.backend.state[key]
        self.backend.state = restored

    def set_window_us(self, window_us: int) -> None:
        """Declare the step period of the stream that follows (an S5 model rescales its timestep to it; an
        exported graph has its period baked in, so another one is refused)."""
        model = getattr(self.backend, "model", None)
        if model is not None:
            model.set_window_us(int(window_us))
        elif int(window_us) != self.spec.window_us and self.metadata.model_config.get("recurrence") == "s5":
            raise ConfigError(f"this S5 graph was exported for {self.spec.window_us} µs steps; re-export it with "
                              f"--window-us {int(window_us)} or use the torch backend")

    def step(self, events: np.ndarray, t_end: int | None = None, frame: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
        """Detect on the sensor events of the window ending at `t_end` (time-sorted EVENT_DTYPE array); `frame`
        is a sensor-aligned HxWx3 uint8 RGB image that replaces the kept one. Returns boxes (N, 4) xyxy in
        sensor pixels, scores, labels, and the raw head output (input pixels)."""
        start = time.perf_counter()
        t_end = self._resolve_t_end(events, t_end)
        sensor_events = events if self.camera is None else self.camera.events(events)
        origin = 0
        if self._halving is not None:
            sensor_events = self._halving.window(sensor_events, t_end - self.spec.window_us)
            origin = self._halving.origin
        inputs = self.spec.model_inputs(sensor_events, [t_end - self.spec.window_us], [t_end],
                                        sequence=self.sequence, time_origin=origin)
        frames = None if frame is None else self._sensor_frame(frame)[None]
        detections, raw = self._run_batch(inputs, frames, start)
        detection = detections[0]
        boxes = self.spec.boxes_to_sensor(detection["boxes"])
        if self.camera is not None:
            boxes = self.camera.boxes_to_camera(boxes)
        return {"boxes": boxes, "scores": detection["scores"], "labels": detection["labels"], "raw": raw[0]}

    def step_inputs(self, inputs: np.ndarray, frames: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
        """One step of B streams: inputs (B, C, H, W) of `spec.input_dtype` from `spec.model_inputs`, frames
        (B, H, W, 3) uint8 at input size (or None: keep the encoded ones). Returns B detections in input pixels."""
        start = time.perf_counter()
        spec = self.spec
        if inputs.dtype != spec.input_dtype or inputs.ndim != 4 or inputs.shape[1:] != (spec.channels,
                                                                                         *self.input_size):
            raise ConfigError(f"inputs must be {spec.input_dtype} (B, {spec.channels}, {self.input_size[0]}, "
                              f"{self.input_size[1]}), got {inputs.dtype} {inputs.shape}")
        return self._run_batch(inputs, frames, start)[0]

    def close(self) -> None:
        """Release temporary files (e.g. a graph exported on the fly for a preset)."""
        for resource in self._resources:
            resource.cleanup()
        self._resources.clear()

    def _run_batch(self, inputs: np.ndarray, frames: np.ndarray | None, start: float
                   ) -> tuple[list[dict], np.ndarray]:
        """(detections in input pixels, raw head output) of one step; timings of every stage."""
        after_repr = time.perf_counter()
        if frames is not None:
            if not self.metadata.use_frames:
                raise ConfigError("this model has no frame branch (exported event-only); step without frames")
            self.backend.encode_frame(np.ascontiguousarray(frames.transpose(0, 3, 1, 2), np.float32) / 255.0)
            self.frame_encodes += 1
        raw = self.backend.run(np.ascontiguousarray(inputs))
        after_infer = time.perf_counter()
        with _one_torch_thread(raw):
            detections = [{k: v.cpu().numpy() for k, v in d.items()}
                          for d in postprocess(raw, self.conf_thresh, self.nms_thresh, self.max_detections, self.rule)]
        end = time.perf_counter()
        self.timings = {"representation": after_repr - start, "inference": after_infer - after_repr,
                        "postprocess": end - after_infer, "total": end - start}
        return detections, raw.cpu().numpy()

    def _resolve_t_end(self, events: np.ndarray, t_end: int | None) -> int:
        if t_end is None:
            if len(events):
                t_end = int(events["t"][-1]) + 1
            elif self._last_t_end is not None:
                t_end = self._last_t_end + self.spec.window_us
            else:
                t_end = self.spec.window_us
        self._last_t_end = int(t_end)
        return int(t_end)

    def _sensor_frame(self, frame: np.ndarray) -> np.ndarray:
        if not self.metadata.use_frames:
            raise ConfigError("this model has no frame branch (exported event-only); call step without frame")
        height, width = self.sensor_size
        if not isinstance(frame, np.ndarray) or frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            got = (getattr(frame, "shape", None), getattr(frame, "dtype", type(frame).__name__))
            raise ConfigError(f"frame must be an RGB uint8 array of the sensor's shape {(height, width, 3)}, got "
                              f"shape {got[0]} dtype {got[1]}")
        return self.spec.frame_input(frame if self.camera is None else self.camera.frame(frame))


@contextlib.contextmanager
def _one_torch_thread(raw: torch.Tensor):
    """Post-process on the calling thread alone (CPU tensors). Its tensors are small (a few thousand anchors);
    torch's OpenMP workers, asleep while another runtime (onnxruntime) ran the step, took longer to wake for
    each parallel region than the work itself: post-processing p50 measured 0.63 ms on one thread against
    2.5-15 ms with two on the onnxruntime backend (loaded 2-core VM), the torch backend's 0.46 ms either way."""
    threads = torch.get_num_threads()
    if raw.device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _StreamHalving:
    """Integrate-and-fire halving of a live stream (geometry "integrate_fire", as FlexEvent's events_2x.h5 holds
    for a recording): each sensor event passes through the counters once, in time order, whatever the steps'
    overlap, and the halved events of the last window are kept for the next step."""

    def __init__(self, spec: Any) -> None:
        from flexdet.data.representations.downsample import downsampled_size

        self.width, self.height = spec.sensor_size
        self.scale = spec.geometry.scale
        self.state = np.zeros((1, *downsampled_size(self.height, self.width, self.scale)), np.int32)
        self.through = None  # time after the last sensor event fed to the counters
        self.origin = 0  # time of the first halved event: the time origin of a halved file (end_grid_us)
        self.kept: np.ndarray | None = None

    def window(self, events: np.ndarray, t_start: int) -> np.ndarray:
        """Halved events since `t_start` of a step given sensor `events` (time-sorted; earlier ones are skipped)."""
        from flexdet.data.representations.downsample import downsample_events

        new = events if self.through is None else events[events["t"] >= self.through]
        halved = downsample_events(new, self.height, self.width, self.scale, state=self.state)
        if len(new):
            self.through = int(new["t"][-1]) + 1
        if len(halved) and self.kept is None:
            self.origin = int(halved["t"][0])
        kept = halved if self.kept is None else np.concatenate([self.kept, halved])
        self.kept = kept[kept["t"] >= t_start]
        return self.kept


def torch_runtime(model: torch.nn.Module, metadata: DeployMetadata, device: str | torch.device | None = None,
                  **options: Any) -> StreamingRuntime:
    """A stepper over an in-memory model (evaluation, pseudo-labelling): the torch backend, eager."""
    from flexdet.export.runtime.torch_backend import TorchBackend

    return StreamingRuntime(TorchBackend(model, metadata, device=device), metadata, **options)
