"""The model side of the demo: a streaming runtime (`flexdet.export.load_runtime`) stepped once per window on the
trained window, by a schedule: "chains" (the phase-shifted states `flexdet eval --schedule chains` scores, one per
output period within the window) or "stream" (one state stepped at every output); the step's frame handed over
only when a new one arrives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flexdet.data.clock import Rate
from flexdet.data.events import make_events
from flexdet.demo.pipeline import StepInput
from flexdet.errors import ConfigError
from flexdet.export.runtime.chains import ChainedRuntime, chain_count

SCHEDULES = ("chains", "stream")


@dataclass
class Detections:
    """One step's detections: boxes (N, 4) xyxy sensor px, scores (N,), labels (N,) int."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


class StepDetector:
    """Feeds each StepInput to a StreamingRuntime: the sensor events of the step's window, t_end, and the model
    frame (the input specification's frame rule) when it changed; the runtime applies the model's input
    specification and returns boxes in sensor pixels. `schedule` (SCHEDULES) says which state each step advances."""

    def __init__(self, runtime: Any, schedule: str = "chains", rate_hz: Rate = 20) -> None:
        if schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.runtime = runtime
        self.metadata = runtime.metadata
        self.schedule = schedule
        self.sequence = ""
        self._last_frame_time: int | None = None
        self._stepper: Any = runtime
        self.set_rate(rate_hz)

    def set_rate(self, rate_hz: Rate) -> None:
        """Follow a new output rate: the chains schedule holds chain_count(rate) states, started afresh when that
        number changes."""
        if self.schedule == "chains" and chain_count(rate_hz, self.window_us) != getattr(self._stepper, "count", 1):
            self._stepper = ChainedRuntime(self.runtime, rate_hz)
            self._stepper.reset(sequence=self.sequence)
            self._last_frame_time = None

    @property
    def window_us(self) -> int:
        return int(self.runtime.spec.window_us)

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.classes)

    def reset(self) -> None:
        """Start a new sequence named `self.sequence` (zero recurrent state, no frame yet)."""
        self._stepper.reset(sequence=self.sequence)
        self._last_frame_time = None

    def warm_up(self, steps: int = 2) -> None:
        """A few untimed steps on two events (and a blank frame for fused models), then a fresh state: the
        first real windows then run at full speed instead of waiting for lazy initialisation."""
        window = self.window_us
        height, width = self.runtime.input_size
        blank = np.zeros((1, height, width, 3), np.uint8) if self.metadata.use_frames else None
        for k in range(steps):  # the whole step path (representation kernels, mapping), then the frame encoder
            events = make_events(np.array([0, window // 2]) + k * window, np.zeros(2), np.zeros(2), np.array([0, 1]))
            self.runtime.step(events, t_end=(k + 1) * window)
            if blank is not None:
                spec = self.runtime.spec
                self.runtime.step_inputs(np.zeros((1, spec.channels, height, width), spec.input_dtype), blank)
        self.reset()

    def __call__(self, step: StepInput) -> Detections:
        frame = self._new_frame(step)
        if isinstance(self._stepper, ChainedRuntime):
            out = self._stepper.step(step.events, t_end=step.t_end, frame=frame, index=step.index)
        else:
            out = self._stepper.step(step.events, t_end=step.t_end, frame=frame)
        return Detections(np.asarray(out["boxes"], np.float32), np.asarray(out["scores"], np.float32),
                          np.asarray(out["labels"], np.int64))

    def close(self) -> None:
        self.runtime.close()

    def _new_frame(self, step: StepInput) -> np.ndarray | None:
        if not self.metadata.use_frames or step.model_frame is None or step.model_frame[0] == self._last_frame_time:
            return None
        self._last_frame_time, frame = step.model_frame
        return np.ascontiguousarray(frame, np.uint8)


def load_detector(model: str, backend: str, width: int, height: int, score_thresh: float,
                  device: str | None = None, schedule: str = "chains", rate_hz: Rate = 20) -> StepDetector:
    """A StepDetector (`schedule` at `rate_hz`) for a width x height camera over `load_runtime(model, backend)`,
    keeping detections with score > score_thresh (0 shows every box the network proposes). A camera of another
    size than the model's sensor is letterboxed onto it (the rule is printed)."""
    import os
    import sys

    from flexdet.export import load_runtime
    from flexdet.models.config import PRESETS

    if not 0 <= score_thresh <= 1:
        raise ConfigError(f"--score-thresh must be in [0, 1], got {score_thresh}")
    if model in PRESETS and not os.path.exists(model):  # load_runtime's rule for a preset name
        print(f"note: --model {model} is a model size, not a trained model: random weights, so its boxes mean "
              "nothing (give a checkpoint or an export folder for real detections)", file=sys.stderr)
    runtime = load_runtime(model, backend=backend, device=device, height=height, width=width,
                           conf_thresh=score_thresh)
    note = runtime.fit_camera(width, height)
    if note:
        print(f"note: {note}")
    return StepDetector(runtime, schedule, rate_hz)
