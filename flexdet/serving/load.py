"""Load figures of a served model: N streams stepped at once (the server batches their steps), N streams with one
step in flight at a time (every server call runs one step), and, for comparison, N in-process runtimes.

Every mode drives StreamingRuntimes (remote or local) through the same windows with `drive`; a step's latency is
the runtime's own `timings["total"]` (histogram, network or server, post-processing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np

from flexdet.errors import ConfigError
from flexdet.export.benchmark import step_windows, uniform_events
from flexdet.export.runtime.streaming import StreamingRuntime


def drive(runtimes: list[StreamingRuntime], windows: list[list], warmup: int, serialise: bool) -> dict:
    """Step each runtime through its windows, one thread per runtime (`serialise`: one step at a time over all
    of them); steps/s over the timed steps of all streams and p50 / p99 of a step in ms."""
    lock = threading.Lock() if serialise else None
    latencies: list[list[float]] = [[] for _ in runtimes]
    started = threading.Barrier(len(runtimes) + 1)
    timed = threading.Barrier(len(runtimes) + 1)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            started.wait()
            for step, (chunk, t_end) in enumerate(windows[k]):
                if step == warmup:
                    timed.wait()
                with lock or nullcontext():
                    runtimes[k].step(chunk, t_end=t_end)
                if step >= warmup:
                    latencies[k].append(runtimes[k].timings["total"] * 1e3)
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)
            timed.abort()

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(runtimes))]
    for thread in threads:
        thread.start()
    started.wait()
    try:
        timed.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    flat = np.concatenate([np.asarray(v) for v in latencies])
    return {"streams": len(runtimes), "steps": int(flat.size), "steps_per_s": flat.size / elapsed,
            "step_ms_p50": float(np.percentile(flat, 50)), "step_ms_p99": float(np.percentile(flat, 99))}


def server_load(url: str, streams: int, steps: int, warmup: int = 5, step_us: int = 10_000,
                event_rate: float = 1e6, in_process: Callable[[], StreamingRuntime] | None = None) -> list[dict]:
    """Rows "server batched", "server unbatched" and, given a factory of local runtimes, "in-process", each over
    `streams` streams of `steps` timed steps on uniform events (a different seed per stream)."""
    from flexdet.serving.client import Client

    if streams < 1 or steps < 1:
        raise ConfigError(f"--streams and --steps must be >= 1, got {streams} and {steps}")
    client = Client(url)
    spec = client.metadata.input
    width, height = spec.sensor_size
    duration = spec.window_us + (warmup + steps) * step_us
    windows = [list(step_windows(uniform_events(height, width, event_rate, duration, seed=k), warmup + steps,
                                 step_us, spec.window_us)) for k in range(streams)]
    rows = []
    for mode, serialise in (("server batched", False), ("server unbatched", True)):
        before = client.statistics()
        runtimes = [client.stream(k + 1, sequence=f"bench-{k}") for k in range(streams)]
        try:
            row = drive(runtimes, windows, warmup, serialise)
        finally:
            for runtime in runtimes:
                runtime.close()
        after = client.statistics()
        executions = after["execution_count"] - before["execution_count"]
        row["mean_batch"] = (after["inference_count"] - before["inference_count"]) / max(executions, 1)
        rows.append({"mode": mode, **row})
    if in_process is not None:
        runtimes = [in_process() for _ in range(streams)]
        try:
            rows.append({"mode": "in-process", **drive(runtimes, windows, warmup, serialise=True), "mean_batch": 1.0})
        finally:
            for runtime in runtimes:
                runtime.close()
    return rows
