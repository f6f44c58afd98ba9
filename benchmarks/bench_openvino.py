"""OpenVINO next to onnxruntime on the same exported graph: inference only, per-step p50 in ms, same inputs.

Usage: python benchmarks/bench_openvino.py EXPORT_DIR [EXPORT_DIR ...] [--steps 30] [--rounds 3]

OpenVINO is not a flexdet dependency (issue #29 asked to measure it as a CPU candidate); install it beside
flexdet (`pip install openvino`) to run this. Each export's model.onnx runs on onnxruntime with the runtime's
settings (one thread per core, no spin-waiting), on onnxruntime with spin-waiting workers, and on OpenVINO's
CPU plugin (LATENCY hint, float32 inference); rounds alternate the three, each figure is its best round's
median. OpenVINO's raw head output is first compared with onnxruntime's (max absolute difference printed).
Make an export with e.g. `flexdet export --preset base --no-frames --height 240 --width 304 --out DIR`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from flexdet.export.runtime.onnx_backend import make_session


def feeds_of(session, seed: int = 0) -> dict[str, np.ndarray]:
    """Zero state and random counts in 0..3 for the events input, at the graph's own (batch 1) shapes."""
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
             for i in session.get_inputs()}
    feeds["events"] = np.random.default_rng(seed).integers(0, 4, feeds["events"].shape).astype(np.float32)
    return feeds


def compare(onnx: Path, steps: int, rounds: int) -> None:
    import openvino

    plain = make_session(onnx)
    spinning = make_session(onnx, allow_spinning=True)
    feeds = feeds_of(plain)
    compiled = openvino.Core().compile_model(str(onnx), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                                "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    ov_feeds = {port.get_any_name(): feeds[port.get_any_name()] for port in compiled.inputs}
    request.infer(ov_feeds)
    difference = float(np.max(np.abs(request.get_output_tensor(0).data - plain.run(None, feeds)[0])))
    candidates = {"onnxruntime (runtime settings)": lambda: plain.run(None, feeds),
                  "onnxruntime spinning": lambda: spinning.run(None, feeds),
                  "OpenVINO CPU f32 latency": lambda: request.infer(ov_feeds)}
    best = dict.fromkeys(candidates, float("inf"))
    for call in candidates.values():
        for _ in range(3):
            call()
    for _ in range(rounds):
        for name, call in candidates.items():
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            best[name] = min(best[name], float(np.median(times)))
    print(f"\n## {onnx.parent.name} ({onnx}); OpenVINO vs onnxruntime raw output: max |diff| {difference:.1e}")
    for name, seconds in best.items():
        print(f"{name:<34}{seconds * 1e3:>9.2f} ms p50")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("OpenVINO is not installed (pip install openvino); nothing to compare", file=sys.stderr)
        return 2
    for folder in args.exports:
        compare(folder / "model.onnx", args.steps, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
