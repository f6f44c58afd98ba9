"""The one stream driver: a detector stepped through windows of sequences with the stepper (torch backend, or any
runtime of the exported model), its inputs built by the model's input specification, several streams side by
side as one batch. Evaluation's schedules, the interframe rules and FAL's teacher (forward and time-reversed
streams) all run through it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from flexdet.data.input_spec import InputSpec
from flexdet.datasets.benchmarks import Benchmark
from flexdet.datasets.sequences import Sequence
from flexdet.export.metadata import metadata_for_model
from flexdet.export.runtime.streaming import StreamingRuntime, torch_runtime

CHUNK_STEPS = 128  # windows whose inputs are built at once (one event read per stream)


@dataclass
class StreamView:
    """One stream of a batch: `sequence`'s windows [starts[k], ends[k]), each paired with frame `frames[k]` (-1:
    none yet; None: the specification's rule), read time-reversed with `backwards`, through `reads` (FlexEvent's
    interframe reads, `WindowReads`)."""

    sequence: Sequence
    starts: np.ndarray
    ends: np.ndarray
    frames: np.ndarray | None = None
    backwards: bool = False
    reads: WindowReads | None = None


class StreamRunner:
    """Drives one detector through sequences with the stepper (`StreamingRuntime`: the model on the torch backend,
    or `runtime`, an exported model on its own backend), its inputs built by the model's input specification;
    several sequences side by side as one batch."""

    def __init__(self, model: torch.nn.Module, spec: InputSpec, benchmark: Benchmark | None = None,
                 device: torch.device | str | None = None, postprocess: Mapping[str, Any] | None = None,
                 runtime: StreamingRuntime | None = None) -> None:
        if runtime is None:
            device = device if device is not None else next(model.parameters()).device
            metadata = metadata_for_model(model, spec)
            if postprocess:  # model-config postprocess fields used instead of the model's own (FlexTune's teacher)
                metadata = dataclasses.replace(metadata, model_config={**metadata.model_config, **postprocess})
            runtime = torch_runtime(model.eval(), metadata, device)
        self.spec = spec
        self.benchmark = benchmark
        self.runtime = runtime
        self.uses_events = getattr(model.config, "use_events", True)
        self.uses_frames = model.config.use_frames
        self._frame_cache: tuple[str, np.ndarray] | None = None
        self.window_us = spec.window_us

    def state_bytes(self) -> int:
        """Bytes of one stream's recurrent state (frame features included): what each extra state a schedule
        holds costs."""
        tensors = self.runtime.backend.state
        return sum(t.numel() * t.element_size() // t.shape[0] for t in tensors)

    def set_window_us(self, window_us: int) -> None:
        """The step period of the streams that follow (S5 models rescale their timestep to it)."""
        self.window_us = int(window_us)
        self.runtime.set_window_us(self.window_us)

    def run(self, sequence: Sequence, starts: np.ndarray, ends: np.ndarray,
            branch: Callable | None = None, reads: WindowReads | None = None) -> list[dict]:
        """Detections (input frame) after each window [starts[k], ends[k]); `branch(k, state, frame_index)` is
        called after step k, for schedules that fork from the stream. `reads`: see `window_inputs`."""
        return self.run_views([StreamView(sequence, starts, ends, reads=reads)], branch)[0]

    def run_many(self, sequences: list[Sequence], starts: list[np.ndarray], ends: list[np.ndarray]
                 ) -> list[list[dict]]:
        """Several sequences streamed side by side as one batch (`run_views`)."""
        return self.run_views([StreamView(s, b, e) for s, b, e in zip(sequences, starts, ends)])

    def run_views(self, views: list[StreamView], branch: Callable | None = None,
                  progress: Callable[[int], None] | None = None) -> list[list[dict]]:
        """Several streams side by side as one batch (each its own state); shorter ones are fed empty windows
        past their end and those outputs dropped. Same detections as one at a time. A step's frames are
        re-encoded only when some stream's frame changed (none before any stream has one). `progress(n)` after
        each chunk of n steps."""
        count = max(len(v.ends) for v in views)
        detections: list[list[dict]] = [[] for _ in views]
        frames = [self._frames(v.sequence) if self.uses_frames else None for v in views]
        wanted_frames = [self._frame_indices(v) if self.uses_frames else None for v in views]
        shown: list[int] | None = None
        self.runtime.reset(len(views))
        for lo in range(0, count, CHUNK_STEPS):
            steps = min(CHUNK_STEPS, count - lo)
            inputs = np.stack([self._inputs(v, lo, steps) for v in views], axis=1)
            for j in range(steps):
                k = lo + j
                batch = None
                if self.uses_frames:
                    wanted = [int(w[min(k, len(w) - 1)]) if len(w) else -1 for w in wanted_frames]
                    if wanted != shown and max(wanted) >= 0:
                        batch = np.stack([self.spec.paired_frames(f, [i])[0] for f, i in zip(frames, wanted)])
                        shown = wanted
                for i, detection in enumerate(self.runtime.step_inputs(inputs[j], batch)):
                    if k < len(views[i].ends):
                        detections[i].append(detection)
                if branch is not None:
                    branch(k, self.runtime.state, shown[0] if shown else -1)
            if progress is not None:
                progress(steps)
        return detections

    def step_from(self, sequence: Sequence, state, start: int, end: int, frame_index: int) -> dict:
        """One forked step [start, end) from `state` (None: a fresh stream) with frame `frame_index` (-1: none);
        the stream's own state is left as it was."""
        kept = self.runtime.state
        if state is None:
            self.runtime.reset(1)
        else:
            self.runtime.restore(state)
        inputs = self._inputs(StreamView(sequence, np.array([start]), np.array([end])), 0, 1)
        frame = None
        if self.uses_frames and frame_index >= 0:
            frame = self._frames(sequence)[frame_index][None]
        self.runtime.set_window_us(max(int(end) - int(start), 1))
        detection = self.runtime.step_inputs(inputs, frame)[0]
        self.runtime.set_window_us(self.window_us)
        self.runtime.restore(kept)
        return detection

    def _inputs(self, view: StreamView, lo: int, count: int) -> np.ndarray:
        """(count, C, H, W) inputs of the view's windows lo.. lo + count; rows past its end (and all,
        frames-only) are zero."""
        width, height = self.spec.size
        out = np.zeros((count, self.spec.channels, height, width), self.spec.input_dtype)
        hi = min(lo + count, len(view.ends))
        if self.uses_events and hi > lo:
            reads = None if view.reads is None else view.reads.part(lo, hi)
            out[:hi - lo] = window_inputs(view.sequence, self.spec, view.starts[lo:hi], view.ends[lo:hi], reads,
                                          view.backwards)
        return out

    def _frame_indices(self, view: StreamView) -> np.ndarray:
        """The frame each of the view's steps is paired with: its own, else the specification's rule."""
        if view.frames is not None:
            return np.asarray(view.frames, np.int64)
        return np.array([self.spec.frame_index(view.sequence.frame_times, int(b), int(e))
                         for b, e in zip(view.starts, view.ends)], np.int64)

    def _frames(self, sequence: Sequence) -> np.ndarray:
        if self._frame_cache is None or self._frame_cache[0] != sequence.name:
            self._frame_cache = (sequence.name, np.stack([sequence.frame(i, self.spec)
                                                          for i in range(len(sequence.frame_times))]))
        return self._frame_cache[1]


class WindowReads(NamedTuple):
    """How FlexEvent's interframe samples read a window's events (data/dsec_utils/dsec_data.py, num_us >= 0): the
    events of [t_i, t_i+1) are read through ms_to_idx, so up to `ends` (t_i+1) on the input's read grid, then kept
    where `events["t"] < event_end` with event_end = t_i + offset, a float (`float32_cuts`): torch promotes the
    int64 times and the float to float32 for that comparison, so the cut falls on float32's grid (4096 µs at DSEC's
    ~3.7e10 µs clock); the window's own bounds [t_i, int(t_i + offset)) cut exactly after that."""

    ends: np.ndarray
    float32_cuts: np.ndarray

    def part(self, lo: int, hi: int) -> WindowReads:
        return WindowReads(self.ends[lo:hi], self.float32_cuts[lo:hi])


def window_inputs(sequence: Sequence, spec: InputSpec, starts: np.ndarray, ends: np.ndarray,
                  reads: WindowReads | None = None, backwards: bool = False) -> np.ndarray:
    """(N, C, H, W) model inputs of the windows [starts[k], ends[k]) (`Sequence.model_inputs`); with
    `reads`, window k's events are those FlexEvent's interframe sample reads (`WindowReads`): up to reads.ends[k]
    through the specification's read grid (`end_grid_us`, from the recording's time origin) instead of the grid at
    the window's end, and only where float32(t) < float32(reads.float32_cuts[k]). The window itself, so its hashed
    sub-window and its histogram bounds, stays [starts[k], ends[k]). `backwards`: the time-reversed windows
    (`Sequence.model_inputs`; not with `reads`)."""
    starts = np.asarray(starts, np.int64).reshape(-1)
    ends = np.asarray(ends, np.int64).reshape(-1)
    if reads is None:
        return sequence.model_inputs(spec, starts, ends, backwards)
    recording = sequence.recording(spec.geometry)
    limits = spec.read_end(np.asarray(reads.ends, np.int64).reshape(-1), int(recording.t_offset))
    cuts = np.asarray(reads.float32_cuts, np.float64).reshape(-1).astype(np.float32)
    width, height = spec.size
    out = np.zeros((len(ends), spec.channels, height, width), spec.input_dtype)
    if len(ends) == 0:
        return out
    plain = spec.replace(end_grid_us=0)
    stops = np.maximum(np.minimum(ends + (1 if spec.end_inclusive else 0), limits), starts)
    events = recording.read(int(starts.min()), int(stops.max()))
    times = events["t"]
    for k in range(len(ends)):
        lo, hi = np.searchsorted(times, [starts[k], stops[k]], side="left")
        chosen = events[lo:hi]
        chosen = chosen[chosen["t"].astype(np.int64).astype(np.float32) < cuts[k]]
        out[k] = plain.model_inputs(chosen, starts[k:k + 1], ends[k:k + 1], sequence=sequence.name,
                                    time_origin=recording.t_offset)[0]
    return out
