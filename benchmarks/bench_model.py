"""Model benchmark: parameters, MACs and CPU latency per streaming step for each preset and input size.

Absolute CPU numbers depend on the machine and its load, so every figure is also given as a ratio to a
baseline measured in the same run (a torchvision ResNet-18 forward at the same input size), and the cost
of the frequency-adaptive filter is measured as nano with / without it (fft and matmul implementations).

    python benchmarks/bench_model.py --presets nano,tiny --quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import flexdet  # noqa: F401, I001  (first: sets the OpenMP wait policy before torch / Numba start)
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from flexdet.models import build_model

SIZES = {"gen1": (240, 304), "dsec_half": (224, 320)}
NANO_TARGET_STEPS_PER_S = 30.0


def time_steps(step, warmup: int, repeats: int, baseline=None) -> tuple[float, float, float]:
    """Median and best seconds of `step()` after warm-up, and the median of its per-repeat ratio to
    `baseline()`.

    Baseline and step alternate, so on a shared CPU both see the same load and the ratio stays meaningful.
    """
    for _ in range(warmup):
        step()
    times, ratios = [], []
    for _ in range(repeats):
        base = _seconds(baseline) if baseline is not None else float("nan")
        seconds = _seconds(step)
        times.append(seconds)
        ratios.append(seconds / base)
    return statistics.median(times), statistics.median(ratios), min(times)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def model_step(model, height: int, width: int):
    """A closure running one streaming step of forward_raw with the state carried between calls."""
    events = torch.randint(0, 5, (1, model.config.in_channels * model.num_views, height, width)).float()
    frames = torch.rand(1, 3, height, width) if model.config.use_frames else None
    state = list(model.init_state(1, height, width))

    def step():
        outputs = model.forward_raw(events, frames, *state)
        state[:] = outputs[1:]
    return step, (events, frames, *state)


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of attention's two matmuls; FlopCounterMode has no formula for the CPU flash-attention op."""
    batch, heads, length, dim = query
    return 2 * batch * heads * length * key[-2] * (dim + value[-1])


def count_macs(model, args) -> float:
    """Multiply-accumulates of one forward_raw step (FlopCounterMode counts 2 FLOPs per MAC; FFTs and
    elementwise ops are not counted)."""
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops})
    with counter:
        model.forward_raw(*args)
    return counter.get_total_flops() / 2


def resnet18_baseline(height: int, width: int):
    """Same-run reference workload: torchvision ResNet-18 (weights=None) forward at this input size."""
    resnet = torchvision.models.resnet18(weights=None).eval()
    image = torch.rand(1, 3, height, width)
    return lambda: resnet(image)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="nano,tiny,small,base", help="comma-separated preset names")
    parser.add_argument("--quick", action="store_true", help="Gen1 size only, fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup, repeats = (3, 10) if args.quick else (5, 30)
    sizes = {"gen1": SIZES["gen1"]} if args.quick else SIZES
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, warmup={warmup}, repeats={repeats}")
    torch.manual_seed(0)
    with torch.inference_mode():
        for size_name, (height, width) in sizes.items():
            baseline = resnet18_baseline(height, width)
            base_s, _, base_best = time_steps(baseline, warmup, repeats)
            print(f"\n== {size_name} {height}x{width}: baseline resnet18 forward {base_s * 1e3:.1f} ms median, "
                  f"{base_best * 1e3:.1f} ms best (ratios below are paired, interleaved with it)")
            print(f"{'preset':<6} {'mode':<6} {'params M':>9} {'GMACs':>7} {'ms/step':>8} {'steps/s':>8} "
                  f"{'x resnet18':>10}")
            for preset in args.presets.split(","):
                for use_frames in (False, True):
                    model = build_model(preset, num_classes=2, use_frames=use_frames).eval()
                    step, step_args = model_step(model, height, width)
                    macs = count_macs(model, step_args)
                    seconds, ratio, _ = time_steps(step, warmup, repeats, baseline)
                    params = sum(p.numel() for p in model.parameters()) / 1e6
                    mode = "fused" if use_frames else "events"
                    print(f"{preset:<6} {mode:<6} {params:>9.2f} {macs / 1e9:>7.2f} {seconds * 1e3:>8.1f} "
                          f"{1 / seconds:>8.1f} {ratio:>10.2f}")
                    if preset == "nano" and not use_frames and size_name == "gen1":
                        verdict = "meets" if 1 / seconds >= NANO_TARGET_STEPS_PER_S else "MISSES"
                        print(f"       nano event-only {1 / seconds:.1f} steps/s {verdict} the "
                              f"{NANO_TARGET_STEPS_PER_S:.0f} steps/s target (median); with the CPU as free as in the "
                              f"baseline's best run: {1 / (ratio * base_best):.1f} steps/s")
            spectral_cost(height, width, warmup, repeats, baseline)
    return 0


def spectral_cost(height: int, width: int, warmup: int, repeats: int, baseline) -> None:
    """What the frequency-adaptive filter (default: strides 16/32) adds to a nano event-only step."""
    variants = {"no filter": {"spectral_stages": [False] * 4},
                "fft 16/32": {"spectral_impl": "fft"},
                "matmul 16/32": {"spectral_impl": "matmul"},
                "matmul 8/16/32": {"spectral_impl": "matmul", "spectral_stages": [False, True, True, True]}}
    results = {}
    for name, overrides in variants.items():
        model = build_model("nano", num_classes=2, use_frames=False, **overrides).eval()
        step, _ = model_step(model, height, width)
        results[name] = time_steps(step, warmup, repeats, baseline)[:2]
    reference = results["no filter"][1]
    print("   spectral filter on nano events (ms, paired ratio to no filter): " + ", ".join(
        f"{name} {t * 1e3:.1f} (x{r / reference:.2f})" for name, (t, r) in results.items()))


if __name__ == "__main__":
    raise SystemExit(main())
