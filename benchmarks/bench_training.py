"""Training throughput of the quickstart recipe: Trainer steps (cached windows, augmentation, targets, BPTT)
against a same-run baseline of the bare model loss + backward on random tensors of the same shapes.

    /work/venv/bin/python benchmarks/bench_training.py --data DIR [--inputs fusion,events,frames] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import flexdet  # noqa: F401, I001  (first: sets the OpenMP wait policy before torch / Numba start)
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="a synthetic quickstart dataset (flexdet synth --preset quickstart)")
    parser.add_argument("--inputs", default="fusion,events,frames")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    from flexdet.training.config import load_train_config
    from flexdet.training.trainer import Trainer

    for inputs in args.inputs.split(","):
        config = load_train_config(preset="quickstart", overrides=[f"model.inputs={inputs}", "run.progress=false"])
        trainer = Trainer(config, args.data, f"/tmp/bench_training_{inputs}")
        trainer.train_step()  # warm-up: builds the window cache, first-call allocations
        tick = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        pipeline = (time.perf_counter() - tick) / args.steps
        batch = trainer.loader.load(trainer.sampler.next_batch())
        events = torch.rand_like(batch.events)
        frames = torch.rand_like(batch.frames) if batch.frames is not None else None
        tick = time.perf_counter()
        for _ in range(args.steps):
            losses, _ = trainer.detector.compute_losses(events, frames, batch.targets)
            losses["total"].backward()
        bare = (time.perf_counter() - tick) / args.steps
        minutes = config.optim.steps * pipeline / 60
        print(f"{inputs:7s} train step {pipeline:.2f} s (bare model {bare:.2f} s, ratio {pipeline / bare:.2f}); "
              f"recipe of {config.optim.steps} steps ~ {minutes:.1f} min at this speed")
        trainer.close()


if __name__ == "__main__":
    main()
