"""Reproducible experiments. `flexdet experiment frequency --out DIR [--budget quick|full]`: events-only,
frames-only, fusion and fusion + FAL trained with the same budget on fast synthetic scenes, AP at 20, 45,
90 and 180 Hz (stream, dense ground truth) -> frequency.json, frequency.png, a table in README.md."""

from __future__ import annotations

import argparse

from flexdet.commands import parse_rates

EXPERIMENTS = ("frequency",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", choices=EXPERIMENTS, help="which experiment")
    parser.add_argument("--out", default="runs/frequency", help="output folder")
    parser.add_argument("--budget", default="quick", choices=("quick", "full"),
                        help="training budget: quick (2-core CPU, ~25 min) or full (GPU)")
    parser.add_argument("--preset", default="frequency", help="synthetic data preset (flexdet/configs/synth)")
    parser.add_argument("--data", help="use this existing synthetic dataset instead of generating one")
    parser.add_argument("--models", default="events,frames,fusion,fusion+fal", help="subset of the four models")
    parser.add_argument("--rates", default="20,45,90,180", help="evaluation rates in Hz")
    parser.add_argument("--ablations", action="store_true",
                        help="also run the FAL ablations: the teacher fine-tuned on GT only, and FlexEvent's regime "
                             "(teacher with the whole budget, student on top); ~2x the FAL time")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="budget recipe overrides")


def run(args: argparse.Namespace) -> int:
    from flexdet.training.experiment import FrequencyOptions, run_frequency

    rates = parse_rates(args.rates)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    run_frequency(args.out, FrequencyOptions(budget=args.budget, synth_preset=args.preset, rates_hz=rates,
                                             models=models, overrides=list(args.overrides), data=args.data,
                                             ablations=args.ablations))
    return 0
