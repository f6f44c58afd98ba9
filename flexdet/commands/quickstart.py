"""One command from nothing to AP-vs-rate: synthetic data, three nano detectors (fusion, events-only,
frames-only) trained on the CPU, evaluated at 20/60/90/180 Hz, with a report."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="quickstart", help="output folder (data, runs, metrics, report)")
    parser.add_argument("--models", default="fusion,events,frames", help="subset of fusion,events,frames")
    parser.add_argument("--rates", default="20,60,90,180", help="detection rates in Hz")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training recipe overrides")


def run(args: argparse.Namespace) -> int:
    from flexdet.errors import ConfigError
    from flexdet.workflows.quickstart import MODELS, QuickstartOptions, run_quickstart

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models or set(models) - set(MODELS):
        raise ConfigError(f"--models must be a subset of {','.join(MODELS)}, got {args.models!r}")
    try:
        rates = tuple(float(r) for r in args.rates.split(","))
    except ValueError:
        raise ConfigError(f"--rates {args.rates!r}: expected comma-separated numbers") from None
    run_quickstart(args.out, QuickstartOptions(models=models, rates_hz=rates, overrides=list(args.overrides)))
    return 0
