"""Simulator speed: simulated seconds per wall second, 320x240 and 640x480, with the same-run baseline.

Baseline: rendering the scene at the sensor's sample times without the pixel model (what any simulator
must at least do), measured in the same run so the ratio survives a busy shared CPU. Also writes the
README picture docs/images/synthetic_sample.png.

    /work/venv/bin/python benchmarks/bench_synth.py [--duration 4] [--workers 2] [--no-picture]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_sequence(size: tuple[int, int], duration: float, seed: int) -> tuple[float, int, int]:
    """Wall seconds, events and samples of one simulated sequence (preset quickstart, given size)."""
    from flexdet.config import apply_overrides
    from flexdet.data.synthetic import load_preset, simulate_sequence

    config = apply_overrides(load_preset("quickstart"), {"scene.width": size[0], "scene.height": size[1],
                                                         "scene.duration_s": duration})
    start = time.perf_counter()
    sequence = simulate_sequence(config, seed)
    return time.perf_counter() - start, len(sequence.events), sequence.samples


def render_only(size: tuple[int, int], duration: float, seed: int, samples: int) -> float:
    """Wall seconds to render the same number of full luma frames (the baseline)."""
    from flexdet.config import apply_overrides
    from flexdet.data.synthetic import Scene, load_preset

    config = apply_overrides(load_preset("quickstart"), {"scene.width": size[0], "scene.height": size[1],
                                                         "scene.duration_s": duration})
    scene = Scene(config.scene, seed)
    buffer = scene.render(0.0)
    start = time.perf_counter()
    for i in range(samples):
        scene.render(duration * i / samples, out=buffer)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--no-picture", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    one_sequence((64, 48), 0.1, 0)  # compile / load the kernels once
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    for size in ((320, 240), (640, 480)):
        seeds = list(range(args.sequences))
        start = time.perf_counter()
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(one_sequence, [size] * len(seeds), [args.duration] * len(seeds), seeds))
        wall = time.perf_counter() - start
        simulated = args.duration * len(seeds)
        events = sum(r[1] for r in results)
        samples = sum(r[2] for r in results)
        per_seq = sum(r[0] for r in results)
        baseline = render_only(size, args.duration, 0, results[0][2])
        sim_cost = results[0][0]
        print(f"{size[0]}x{size[1]}: {simulated:.0f} simulated s in {wall:.1f} wall s on {args.workers} workers "
              f"= {simulated / wall:.2f}x real time; {events / simulated / 1e3:.0f} kev/s simulated, "
              f"{samples / simulated:.0f} samples/s; one worker {args.duration * len(seeds) / per_seq:.2f}x; "
              f"full simulation / render-only baseline (seq 0) = {sim_cost / baseline:.1f}x")
    if not args.no_picture:
        from flexdet.data.synthetic import load_preset, simulate_sequence
        from flexdet.data.synthetic.preview import save_preview

        picture = ROOT / "docs" / "images" / "synthetic_sample.png"
        save_preview(simulate_sequence(load_preset("quickstart"), 2), picture)  # seed 2: cars and a pedestrian
        print(f"wrote {picture}")


if __name__ == "__main__":
    main()
