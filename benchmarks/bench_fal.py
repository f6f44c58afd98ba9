"""Time FlexTune pseudo-labelling (teacher forward + time-reversed as one batch of two, thresholds, NMS,
tracker, write) against the baseline of one plain forward stream of the same teacher over the same windows
(flexdet.evaluation.evaluate.StreamRunner); ratio = pseudo-labelling / baseline (2 directions: ideal <= 2).

    /work/venv/bin/python benchmarks/bench_fal.py [--duration 3] [--size 256x192] [--frames]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import flexdet  # noqa: F401, I001  (first: sets the OpenMP wait policy before torch / Numba start)
import torch

from flexdet.config import apply_overrides
from flexdet.data.synthetic import generate_dataset, load_preset
from flexdet.models import build_model
from flexdet.datasets.sequences import open_dataset
from flexdet.evaluation.stream import StreamRunner
from flexdet.fal.config import FALConfig
from flexdet.fal.generate import base_times, fine_grid, pseudo_label_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="sequence length in seconds")
    parser.add_argument("--size", default="256x192", help="sensor WxH")
    parser.add_argument("--frames", action="store_true", help="fusion teacher (events + RGB)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as root:
        config = apply_overrides(load_preset("quickstart"), {
            "scene.width": width, "scene.height": height, "scene.duration_s": args.duration,
            "dataset.sequences": 1, "dataset.split": [1.0, 0.0, 0.0], "dataset.workers": 1})
        generate_dataset(root, config)
        torch.manual_seed(0)
        model = build_model("nano", num_classes=2, use_frames=args.frames).eval()
        dataset = open_dataset(root, "train")
        sequence = dataset.sequences[0]
        grid = fine_grid(base_times(sequence), 2)
        runner = StreamRunner(model, dataset.input_spec(), dataset.benchmark)
        runner.run(sequence, grid[:2], grid[1:3])  # warm-up: Numba kernels compile on first use
        pseudo_label_dataset(model, root, "train", FALConfig(), show_progress=False)
        start = time.perf_counter()
        runner.run(sequence, grid[:-1], grid[1:])
        baseline = time.perf_counter() - start
        start = time.perf_counter()
        pseudo_label_dataset(model, root, "train", FALConfig(), show_progress=False)
        fal = time.perf_counter() - start
        dataset.close()
    steps = len(grid) - 1
    print(f"{steps} steps of {np.diff(grid).mean() / 1000:.1f} ms at {width}x{height}, "
          f"{'fusion' if args.frames else 'events-only'} nano teacher, {torch.get_num_threads()} threads")
    print(f"baseline forward stream : {baseline:7.2f} s  ({steps / baseline:6.1f} steps/s)")
    print(f"pseudo-label (fwd + rev): {fal:7.2f} s  ({steps / fal:6.1f} steps/s per direction pair)")
    print(f"ratio pseudo-label / baseline: {fal / baseline:.2f}")


if __name__ == "__main__":
    main()
