"""Reproducible experiments. `flexdet experiment frequency --out DIR [--budget quick|medium|full] [--models ...]
[--seeds 0,1]`: detectors trained with the same budget on fast synthetic scenes from 20 Hz labels (events, frames,
fusion; S5 or ConvLSTM; multi-rate; FAL), AP at 20, 45, 90 and 180 Hz (stream, dense ground truth) ->
frequency.json, frequency.png, learning_curves.png, a table in README.md."""

from __future__ import annotations

import argparse

from flexdet.commands import parse_rates

EXPERIMENTS = ("frequency",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", choices=EXPERIMENTS, help="which experiment")
    parser.add_argument("--out", default="runs/frequency", help="output folder")
    parser.add_argument("--budget", default="quick", choices=("quick", "medium", "full"),
                        help="training budget per model: quick (400 steps, ~6 min a model on a 2-core CPU), medium "
                             "(1200 steps, ~25 min a model with one thread there) or full (GPU)")
    parser.add_argument("--preset", default="frequency", help="synthetic data preset (flexdet/configs/synth)")
    parser.add_argument("--data", help="use this existing synthetic dataset instead of generating one")
    parser.add_argument("--models", default="events,frames,fusion,fusion+fal",
                        help="comma-separated <events|frames|fusion>[-s5][+mr|+fal]: -s5 the S5 recurrence, +mr "
                             "multi-rate clips, +fal frequency-adjusted labels (e.g. fusion,fusion-s5+mr)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds; the table shows the mean "
                                                     "and spread")
    parser.add_argument("--rates", default="20,45,90,180", help="evaluation rates in Hz")
    parser.add_argument("--ablations", action="store_true",
                        help="also run the FAL ablations: the teacher fine-tuned on GT only, and FlexEvent's regime "
                             "(teacher with the whole budget, student on top); ~2x the FAL time")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="budget recipe overrides")


def run(args: argparse.Namespace) -> int:
    from flexdet.errors import ConfigError
    from flexdet.workflows.experiment import FrequencyOptions, model_config, run_frequency

    rates = parse_rates(args.rates)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1") from None
    for model in models:  # recipe overrides are checked before minutes of data generation and training
        model_config(args.budget, model, rates, list(args.overrides))
    run_frequency(args.out, FrequencyOptions(budget=args.budget, synth_preset=args.preset, rates_hz=rates,
                                             models=models, seeds=seeds, overrides=list(args.overrides),
                                             data=args.data, ablations=args.ablations))
    return 0
