"""The `flexdet` command: one verb per job (info, synth, train, eval, export, bench, demo, quickstart, ...).

Each verb lives in `flexdet/commands/<verb>.py` with `add_arguments(parser)` and `run(args) -> int`.
Command modules import only light things at module level so `flexdet --help` stays fast; the heavy
work (torch, Numba) loads inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from flexdet import __version__
from flexdet.errors import FlexdetError

# verb -> (module, one-line help). Order is the order `flexdet --help` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("flexdet.commands.info", "describe an event recording (format, size, duration, rate)"),
    "synth": ("flexdet.commands.synth", "generate a synthetic event + RGB detection dataset (DSEC or Gen1 layout)"),
    "export": ("flexdet.commands.export", "export a model to ONNX (+ TensorRT) with its checkpoint and metadata"),
    "bench": ("flexdet.commands.bench", "benchmark the streaming runtime (steps/s, latency per stage)"),
    "train": ("flexdet.commands.train", "train a detector on a dataset (recipe + key=value overrides, resumable, DDP)"),
    "eval": ("flexdet.commands.eval", "evaluate a checkpoint at any detection rate (stream, interframe, global)"),
    "score": ("flexdet.commands.score", "score prediction files of any tool under a benchmark's official rules"),
    "quickstart": ("flexdet.commands.quickstart", "synthetic data -> train fusion/events/frames nano models -> AP vs rate"),
    "serve": ("flexdet.commands.serve", "serve an export to many cameras with Triton, each stream's state kept"),
    "demo": ("flexdet.commands.demo", "live detection on a recording, video, webcam or event camera, boxes on screen"),
    "pseudo-label": ("flexdet.commands.pseudo_label", "FlexTune pseudo labels between labelled frames from a teacher"),
    "fal": ("flexdet.commands.fal", "FAL chain: teacher -> pseudo labels -> student -> AP at every rate"),
    "experiment": ("flexdet.commands.experiment", "reproducible experiments: `frequency` (AP vs rate, FAL vs not)"),
    "presets": ("flexdet.commands.presets", "list the shipped training recipes, model sizes and synthetic scenes"),
    "convert": ("flexdet.commands.convert", "convert a published checkpoint (RVT-T/S/B, Gen1/1Mpx) into a flexdet model"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command attached."""
    parser = argparse.ArgumentParser(
        prog="flexdet", description="Event + RGB object detection at any rate: data, training, export, demo.")
    parser.add_argument("--version", action="version", version=f"flexdet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for verb, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        verb_parser = sub.add_parser(verb, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(verb_parser)
        verb_parser.add_argument("--debug", action="store_true",
                                 help="show the full traceback of an error instead of its one-line message")
        verb_parser.set_defaults(_module=module_name)
    return parser


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse like `parse_args`, except that KEY=VALUE overrides may come anywhere, before or after options
    (argparse alone takes a verb's positional overrides only where its first positional stands)."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flexdet` console script; returns the process exit code."""
    args = parse_command_line(build_parser(), argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except FlexdetError as exc:
        if args.debug:
            raise
        print(f"flexdet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flexdet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`flexdet info x --json | head`): stop quietly, like other CLIs.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
