"""The whole FAL / FlexTune chain: train a teacher on the last half of each label interval, pseudo-label the
training split between the labels, fine-tune the student from the teacher on GT + pseudo labels, and
evaluate both as a stream at each rate: `flexdet fal --data DIR --out DIR [--preset NAME] [key=value ...]`."""

from __future__ import annotations

import argparse

from flexdet.commands import parse_rates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="base training recipe YAML (teacher and student overlays go on it)")
    source.add_argument("--preset", default=None, help="shipped base recipe (default quickstart)")
    parser.add_argument("--data", required=True, help="dataset folder (synthetic, DSEC-Det or Gen1 layout)")
    parser.add_argument("--out", default="runs/fal", help="output folder (teacher/, student/, metrics)")
    parser.add_argument("--rates", default="20,45,90,180", help="evaluation rates in Hz")
    parser.add_argument("--split", default="test", help="split to evaluate on ('none' to skip evaluation)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="base recipe overrides, e.g. optim.steps=2000 fal.student.steps=600")


def run(args: argparse.Namespace) -> int:
    from flexdet.evaluation.results import metrics_markdown
    from flexdet.training.config import load_train_config
    from flexdet.workflows.fal_chain import run_fal_chain

    rates = parse_rates(args.rates)
    base = load_train_config(args.config, args.preset or (None if args.config else "quickstart"), args.overrides)
    result = run_fal_chain(base, args.data, args.out, rates, None if args.split == "none" else args.split,
                           base.run.progress)
    if result.rows:
        print(metrics_markdown(result.rows, ["model", "rate_hz", "AP", "AP50", "steps_scored"]))
    print(f"teacher {result.teacher}\nstudent {result.student}")
    return 0
