"""Evaluate a checkpoint at any detection rate: COCO AP / AP50 / AP75 / APs/m/l per rate, predictions per
sequence and rate, a metrics table and an AP-vs-rate plot in --out."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (RUN/checkpoints/last.pt)")
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--rates", default="20,60,90,180", help="comma-separated detection rates in Hz")
    parser.add_argument("--protocol", default="stream", choices=["stream", "interframe", "global"],
                        help="stream: continuous run at each rate; interframe: DAGr deltas; global: label instants")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default="runs/eval", help="output folder")


def run(args: argparse.Namespace) -> int:
    from flexdet.errors import ConfigError
    from flexdet.training.evaluate import evaluate_checkpoint
    from flexdet.training.results import metrics_markdown

    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--rates {args.rates!r}: expected comma-separated numbers, e.g. 20,60,90,180") from None
    rows = evaluate_checkpoint(args.checkpoint, args.data, rates, args.protocol, args.out, args.split)
    print(metrics_markdown(rows))
    print(f"results in {args.out}")
    return 0
