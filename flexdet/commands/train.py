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
    parser.add_argument("--data", help="dataset folder (synthetic, DSEC-Det, Gen1/1Mpx or RVT); with --resume the "
                                       "run's own by default")
    parser.add_argument("--out", default="runs/train", help="run folder (checkpoints, TensorBoard, config)")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from OUT/checkpoints/last.pt with the run's saved configuration")
    parser.add_argument("--overwrite", action="store_true", help="train into an OUT that already holds a run")
    parser.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this step; resume later")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. optim.steps=1000")


def run(args: argparse.Namespace) -> int:
    """Train into --out while holding its lock (rank 0 of a torchrun job holds it for the job)."""
    import contextlib
    import os

    from flexdet.atomic import folder_lock, require_output_dir

    require_output_dir(args.out)
    lock = folder_lock(args.out) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()
    with lock:
        return _train(args)


def _train(args: argparse.Namespace) -> int:

    from flexdet.errors import ConfigError
    from flexdet.models.checkpoint import run_checkpoint
    from flexdet.training.distributed import cleanup
    from flexdet.training.trainer import train

    checkpoint = run_checkpoint(args.out)
    if checkpoint.is_file() and not (args.resume or args.overwrite):
        raise ConfigError(f"{args.out} already holds a run ({checkpoint}); continue it with --resume, replace it "
                          "with --overwrite, or choose another --out")
    data = args.data
    if args.resume and checkpoint.is_file():
        from flexdet.models.checkpoint import read_training_checkpoint
        from flexdet.training.config import resume_config

        payload = read_training_checkpoint(checkpoint)
        config = resume_config(payload["config"], args.overrides, str(checkpoint))
        data = data or (payload.get("dataset") or {}).get("root")
        print(f"resuming {checkpoint} with the run's saved configuration (data {data})")
    else:
        config = _recipe(args)
    if not data:
        raise ConfigError("--data: which dataset to train on (only --resume of an existing run knows its own)")
    try:
        result = train(config, data, args.out, resume=args.resume, stop_after=args.stop_after)
    finally:
        cleanup()
    print(f"step {result.step}: checkpoint {result.checkpoint}")
    return 0


def _recipe(args: argparse.Namespace):
    """The recipe of a new run: --config / --preset, overrides, then the FAL recipe or --init."""
    from flexdet.config import apply_overrides
    from flexdet.training.config import load_train_config

    config = load_train_config(args.config, args.preset, args.overrides)
    if args.recipe:
        from flexdet.training.recipes import apply_recipe

        return apply_recipe(config, args.recipe, args.init)
    if args.init:
        return apply_overrides(config, {"model.init": args.init})
    return config
