"""CPU variants of an exported step graph: onnxruntime's offline-optimised graph, onnxruntime's transformer
fusions, and static INT8 (QDQ) quantisation calibrated on the model's own event windows.

`flexdet export --target cpu` writes the offline-optimised graph as model_cpu.onnx and, in cpu.json, the session
settings that ran it fastest on the exporting machine (see benchmarks/bench_cpu_deploy.py and the README's CPU
section); the onnxruntime backend loads them whenever it runs on the CPU.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from flexdet.atomic import atomic_write_text
from flexdet.errors import ConfigError, FormatError, MissingDependencyError
from flexdet.export.benchmark import step_windows, uniform_events
from flexdet.export.onnx_export import EVENTS_INPUT
from flexdet.export.runtime.onnx_backend import make_session

CPU_ONNX_NAME = "model_cpu.onnx"
# The settings the CPU variant is loaded with (measured best on a shared 2-core VM, see the README): all graph
# optimisations, sequential execution, the memory arena on, no spin-waiting (spinning took the CPU from the
# representation and post-processing stages and from other processes).
CPU_SESSION = {"graph_optimization_level": "all", "execution_mode": "sequential", "allow_spinning": False}


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("onnxruntime", "the CPU export") from None
    return ort


def optimized_graph(source: os.PathLike[str] | str, target: os.PathLike[str] | str) -> Path:
    """Save onnxruntime's own graph optimisations (constant folding, LayerNorm / GELU / attention fusions,
    NCHWc layouts for the CPU) into `target`, so a session starts without redoing them."""
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = os.fspath(target)
    ort.InferenceSession(os.fspath(source), options, providers=["CPUExecutionProvider"])
    return Path(target)


def transformer_fused(source: os.PathLike[str] | str, target: os.PathLike[str] | str) -> Path:
    """onnxruntime's transformer optimiser (fused attention, LayerNorm, GELU, bias-add) written to `target`."""
    try:
        from onnxruntime.transformers import optimizer
    except ImportError:
        raise MissingDependencyError("onnxruntime", "the transformer optimiser") from None
    model = optimizer.optimize_model(os.fspath(source), model_type="vit", num_heads=0, hidden_size=0,
                                     opt_level=1, use_gpu=False)
    model.save_model_to_file(os.fspath(target))
    return Path(target)


class _Feeds:
    """onnxruntime.quantization's calibration reader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)

    def rewind(self):  # pragma: no cover - not used by the MinMax calibrator
        raise NotImplementedError


def calibration_feeds(onnx_path: os.PathLike[str] | str, windows: Iterable[np.ndarray],
                      every: int = 1) -> list[dict[str, np.ndarray]]:
    """The step graph's full feeds (model input + recurrent state) along a stream of input windows, stepping
    the float graph so that the states the calibration sees are the ones the stream produces."""
    ort = _ort()
    session = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    outputs = [o.name for o in session.get_outputs()]
    state = {i.name: np.zeros([1 if not isinstance(d, int) else d for d in i.shape], np.float32)
             for i in inputs if i.name != EVENTS_INPUT}
    feeds = []
    for k, window in enumerate(windows):
        feed = {EVENTS_INPUT: np.ascontiguousarray(window, np.float32), **state}
        if k % every == 0:
            feeds.append(dict(feed))
        results = dict(zip(outputs, session.run(outputs, feed)))
        state = {name: results["out_" + name.removeprefix("in_")] if "out_" + name.removeprefix("in_") in results
                 else value for name, value in state.items()}
    if not feeds:
        raise ConfigError("INT8 calibration needs at least one event window")
    return feeds


def quantized_int8(source: os.PathLike[str] | str, target: os.PathLike[str] | str,
                   feeds: list[dict[str, np.ndarray]], op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
                   ) -> Path:
    """Static INT8 QDQ: weights int8 per channel, activations uint8 with min/max ranges from `feeds`; only
    `op_types` are quantised (the recurrent state's element-wise updates stay in float32)."""
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MissingDependencyError("onnxruntime", "INT8 quantisation") from None
    target = Path(target)
    prepared = target.with_name(target.stem + ".prep.onnx")
    try:
        quant_pre_process(os.fspath(source), os.fspath(prepared), skip_symbolic_shape=True)
        quantize_static(os.fspath(prepared), os.fspath(target), _Feeds(feeds), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(op_types), calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    finally:
        prepared.unlink(missing_ok=True)
    return target


def stream_windows(spec, events: np.ndarray, steps: int, step_us: int) -> Iterator[np.ndarray]:
    """The model's input windows (1, C, H, W) along `events`, one per step of `step_us`."""
    for chunk, t_end in step_windows(events, steps, step_us, spec.window_us):
        yield spec.model_inputs(chunk, [t_end - spec.window_us], [t_end])


CPU_CHOICE_NAME = "cpu.json"
# Session settings tried by `flexdet export --target cpu` on the machine it runs on (the fastest is kept):
# onnxruntime's default thread count (one per core), one thread (wins where other processes hold the other
# cores), parallel execution of independent branches, and spin-waiting workers (win on an otherwise idle
# machine: 1.2-1.3x end to end for tiny and base on an idle 2-core VM; they lose where other work needs the cores).
SESSION_CANDIDATES = {
    "threads=cores": {},
    "threads=1": {"intra_op_num_threads": 1},
    "parallel": {"execution_mode": "parallel", "inter_op_num_threads": 2},
    "spinning": {"allow_spinning": True},
}


def write_cpu_variant(folder: os.PathLike[str] | str, metadata, steps: int = 12, rounds: int = 2) -> dict:
    """Write model_cpu.onnx (onnxruntime's offline-optimised float32 graph) and cpu.json (the session settings
    that ran it fastest here, and what each candidate measured) into an export folder holding model.onnx.

    The variant must reproduce model.onnx's outputs on the timing windows within float32 rounding (checked:
    a mismatch raises ConfigError), so the CPU model's accuracy is the model's."""
    folder = Path(folder)
    source = folder / "model.onnx"
    target = optimized_graph(source, folder / CPU_ONNX_NAME)
    spec = metadata.input
    width, height = spec.sensor_size
    events = uniform_events(height, width, 1e6, spec.window_us + (steps + 1) * 1000)
    windows = list(stream_windows(spec, events, steps, 1000))
    feeds = calibration_feeds(source, windows)
    reference = make_session(source, **CPU_SESSION)
    outputs = [o.name for o in reference.get_outputs()]
    sessions = {name: make_session(target, **{**CPU_SESSION, **options})
                for name, options in SESSION_CANDIDATES.items()}
    worst = 0.0
    for feed in feeds[:3]:
        expected = reference.run(outputs, feed)
        got = sessions["threads=cores"].run(outputs, feed)
        for a, b in zip(expected, got):
            worst = max(worst, float(np.max(np.abs(a - b) / (np.abs(a) + 1.0))) if a.size else 0.0)
    if worst > 1e-3:
        raise ConfigError(f"{target}: the optimised CPU graph differs from {source} by {worst:.2e} (relative); "
                          f"not written as the CPU model")
    best = {name: float("inf") for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            for feed in feeds:
                session.run(outputs, feed)
            best[name] = min(best[name], (time.perf_counter() - start) / len(feeds))
    chosen = min(best, key=best.get)
    choice = {"model": CPU_ONNX_NAME, "session": {**CPU_SESSION, **SESSION_CANDIDATES[chosen]},
              "chosen": chosen, "inference_ms": {name: round(seconds * 1e3, 3) for name, seconds in best.items()},
              "max_relative_difference": worst, "cores": os.cpu_count()}
    atomic_write_text(folder / CPU_CHOICE_NAME, json.dumps(choice, indent=1, sort_keys=True) + "\n")
    return choice


def read_cpu_choice(folder: os.PathLike[str] | str) -> tuple[Path, dict] | None:
    """(CPU model path, session settings) from an export folder's cpu.json, or None when it has none."""
    path = Path(folder) / CPU_CHOICE_NAME
    if not path.is_file():
        return None
    try:
        choice = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, f"not a JSON file written by `flexdet export --target cpu` ({exc})") from None
    if not isinstance(choice, dict) or not isinstance(choice.get("model"), str) \
            or not isinstance(choice.get("session"), dict) or Path(choice["model"]).name != choice["model"]:
        raise FormatError(path, "needs 'model' (a file name in this folder) and 'session' (settings)")
    allowed = set(inspect.signature(make_session).parameters) - {"path", "providers"}
    unknown = set(choice["session"]) - allowed
    if unknown:
        raise FormatError(path, f"unknown session settings {sorted(unknown)} (known: {sorted(allowed)})")
    model = Path(folder) / choice["model"]
    if not model.is_file():
        raise FormatError(path, f"names {choice['model']}, which is not in {folder}")
    return model, dict(choice["session"])
