"""Measure a StreamingRuntime: steps/s and per-stage latency percentiles over a stream of event windows.

Shared by `flexdet bench` and benchmarks/bench_runtime.py so both report the same figures the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np

from flexdet.data.events import make_events
from flexdet.data.representations.windows import window_bounds
from flexdet.errors import ConfigError
from flexdet.export.runtime.streaming import STAGES, StreamingRuntime


def uniform_events(height: int, width: int, rate_hz: float, duration_us: int, seed: int = 0) -> np.ndarray:
    """Events uniform in space, time and polarity at `rate_hz` events per second over [0, duration_us)."""
    rng = np.random.default_rng(seed)
    count = int(round(rate_hz * duration_us / 1e6))
    return make_events(np.sort(rng.integers(0, duration_us, count)), rng.integers(0, width, count),
                       rng.integers(0, height, count), rng.integers(0, 2, count))


def recording_events(path: os.PathLike[str] | str, duration_us: int) -> tuple[np.ndarray, int, int]:
    """(events of the recording's first `duration_us`, shifted to start at 0; height; width)."""
    from flexdet.data.readers import open_recording

    with open_recording(path) as recording:
        events = recording.read(recording.t_start, recording.t_start + duration_us)
        height, width = recording.height, recording.width
    events = events.copy()
    events["t"] -= events["t"][0] if len(events) else 0
    return events, height, width


def step_windows(events: np.ndarray, steps: int, step_us: int, window_us: int) -> Iterator[tuple[np.ndarray, int]]:
    """(events of [t_end - window_us, t_end), t_end) for the first `steps` steps of a stream whose step k ends
    at window_us + k * step_us (the step clock with a whole-µs stride)."""
    starts, ends = window_bounds(window_us - step_us, window_us + (steps - 1) * step_us, window_us=window_us,
                                 stride_us=step_us)
    t = events["t"]
    for t_start, t_end in zip(starts.tolist(), ends.tolist()):
        lo, hi = np.searchsorted(t, [t_start, t_end])
        yield events[lo:hi], t_end


def benchmark(runtime: StreamingRuntime, events: np.ndarray, steps: int, step_us: int = 1000, warmup: int = 10,
              frame_every: int | None = None) -> dict:
    """Run warmup + steps windows through `runtime` (state carried); steps/s and p50/p99 ms of each stage.

    frame_every: with a fused model, pass a new frame every that many steps (None: one frame at the start).
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    window_us = runtime.spec.window_us
    frame = None
    if runtime.metadata.use_frames:
        frame = np.random.default_rng(0).integers(0, 256, (*runtime.sensor_size, 3), dtype=np.uint8)
    runtime.reset()
    times = {stage: [] for stage in STAGES}
    windows = step_windows(events, warmup + steps, step_us, window_us)
    start = None
    encodes_before = 0
    for k, (chunk, t_end) in enumerate(windows):
        if k == warmup:
            start = time.perf_counter()
            encodes_before = _frame_encodes(runtime)
        new_frame = frame is not None and (k == 0 or (frame_every and k % frame_every == 0))
        runtime.step(chunk, t_end=t_end, frame=frame if new_frame else None)
        if k >= warmup:
            for stage in STAGES:
                times[stage].append(runtime.timings[stage] * 1e3)
    elapsed = time.perf_counter() - start
    report = {"backend": runtime.backend_name, "steps": steps, "steps_per_s": steps / elapsed,
              "frame_encoder_runs": _frame_encodes(runtime) - encodes_before,
              "events_per_step": float(np.mean([len(c) for c, _ in step_windows(events, steps, step_us,
                                                                                  window_us)]))}
    for stage in STAGES:
        report[f"{stage}_ms_p50"] = float(np.percentile(times[stage], 50))
        report[f"{stage}_ms_p99"] = float(np.percentile(times[stage], 99))
    return report


def _frame_encodes(runtime) -> int:
    """How many times the runtime's frame encoder has run (0 for an event-only model)."""
    return int(getattr(runtime, "frame_encodes", 0))
