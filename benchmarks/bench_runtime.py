"""Runtime benchmark on the CPU: onnxruntime vs torch eager, nano and tiny at 240x304, event-only and fused.

Both backends of a row run the same event stream (uniform events at --event-rate) in alternating blocks,
so on a shared CPU both see the same load and the ratio onnxruntime / torch is meaningful even when the
absolute steps/s are not. Target: onnxruntime >= 1.3x torch eager.

    python benchmarks/bench_runtime.py --presets nano,tiny --steps 30 [--fused] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import flexdet  # noqa: F401, I001  (first: sets the OpenMP wait policy before torch starts its pool)
import torch

from flexdet.export.benchmark import benchmark, uniform_events
from flexdet.export.runtime import load_runtime

TARGET_RATIO = 1.3


def compare(preset: str, use_frames: bool, height: int, width: int, steps: int, blocks: int, threads: int,
            event_rate: float) -> dict:
    """steps/s of torch eager and onnxruntime on one preset, measured in `blocks` alternating blocks."""
    common = {"height": height, "width": width, "use_frames": use_frames, "seed": 0}
    runtimes = {"torch": load_runtime(preset, backend="torch", device="cpu", **common),
                "onnxruntime": load_runtime(preset, backend="onnxruntime", intra_op_num_threads=threads,
                                            graph_optimization_level="all", **common)}
    window = runtimes["torch"].metadata.window_us
    events = uniform_events(height, width, event_rate, window + (steps + 5) * 1000)
    rates = {name: [] for name in runtimes}
    stages = {name: {} for name in runtimes}
    for _ in range(blocks):
        for name, runtime in runtimes.items():
            report = benchmark(runtime, events, steps, warmup=3, frame_every=10)
            rates[name].append(report["steps_per_s"])
            stages[name] = report
    for runtime in runtimes.values():
        runtime.close()
    ratios = [o / t for o, t in zip(rates["onnxruntime"], rates["torch"])]
    return {"preset": preset, "fused": use_frames, "height": height, "width": width,
            "torch_steps_per_s": statistics.median(rates["torch"]),
            "onnxruntime_steps_per_s": statistics.median(rates["onnxruntime"]),
            "ratio": statistics.median(ratios),
            "torch_infer_ms_p50": stages["torch"]["inference_ms_p50"],
            "onnxruntime_infer_ms_p50": stages["onnxruntime"]["inference_ms_p50"],
            "repr_ms_p50": stages["onnxruntime"]["representation_ms_p50"],
            "post_ms_p50": stages["onnxruntime"]["postprocess_ms_p50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="nano,tiny")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=304)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per block")
    parser.add_argument("--blocks", type=int, default=3, help="alternating torch / onnxruntime blocks")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra_op_num_threads")
    parser.add_argument("--event-rate", type=float, default=1e6, help="events per second")
    parser.add_argument("--fused", action="store_true", help="also the fused (events + RGB) models")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [compare(preset, fused, args.height, args.width, args.steps, args.blocks, args.threads, args.event_rate)
            for preset in args.presets.split(",") for fused in ((False, True) if args.fused else (False,))]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'model':<12}{'HxW':>9}{'torch st/s':>12}{'ort st/s':>10}{'ratio':>7}{'torch inf ms':>14}"
          f"{'ort inf ms':>12}{'repr ms':>9}{'post ms':>9}")
    for r in rows:
        name = r["preset"] + ("+rgb" if r["fused"] else "")
        print(f"{name:<12}{r['height']}x{r['width']:<5}{r['torch_steps_per_s']:>10.1f}{r['onnxruntime_steps_per_s']:>10.1f}"
              f"{r['ratio']:>7.2f}{r['torch_infer_ms_p50']:>14.1f}{r['onnxruntime_infer_ms_p50']:>12.1f}"
              f"{r['repr_ms_p50']:>9.2f}{r['post_ms_p50']:>9.2f}")
    print(f"target: onnxruntime >= {TARGET_RATIO}x torch eager; met for "
          f"{sum(r['ratio'] >= TARGET_RATIO for r in rows)}/{len(rows)} rows")


if __name__ == "__main__":
    main()
