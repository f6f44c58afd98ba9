"""Train a detector: `flexdet train --preset quickstart --data DIR [--out RUN_DIR] [--resume] [key=value ...]`.

FAL: `--recipe teacher` (last half of each label interval) or `--recipe student --init TEACHER.pt` (GT +
pseudo labels from `flexdet pseudo-label`) turns the chosen recipe into FlexEvent's teacher or student.

Multi-GPU / multi-node: `torchrun --nproc_per_node N -m flexdet.cli train ...` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="training recipe YAML file")
    source.add_argument("--preset", help="shipped recipe name (see flexdet/configs/train/), e.g. quickstart")
    parser.add_argument("--recipe", choices=("teacher", "student"), help="FAL recipe laid over the chosen one")
    parser.add_argument("--init", help="checkpoint whose weights the run starts from (the student's teacher)")
    parser.add_argument("--data", required=True, help="dataset folder (synthetic, DSEC-Det, Gen1/1Mpx or RVT)")
    parser.add_argument("--out", default="runs/train", help="run folder (checkpoints, TensorBoard, config)")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoints/last.pt")
    parser.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this step; resume later")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. optim.steps=1000")


def run(args: argparse.Namespace) -> int:
    from flexdet.training.config import load_train_config
    from flexdet.training.distributed import cleanup
    from flexdet.training.trainer import train

    config = load_train_config(args.config, args.preset, args.overrides)
    if args.recipe:
        from flexdet.training.fal.recipes import apply_recipe

        config = apply_recipe(config, args.recipe, args.init)
    elif args.init:
        from flexdet.config import apply_overrides

        config = apply_overrides(config, {"model.init": args.init})
    try:
        result = train(config, args.data, args.out, resume=args.resume, stop_after=args.stop_after)
    finally:
        cleanup()
    print(f"step {result.step}: checkpoint {result.checkpoint}")
    return 0
