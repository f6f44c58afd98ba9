"""Evaluate a checkpoint at any detection rate: COCO AP / AP50 / AP75 / APs/m/l per rate, predictions per
sequence and rate (in the label files' dtype and class ids), a metrics table and an AP-vs-rate plot in --out.
--benchmark chooses the scoring rules (docs/benchmarks.md), --schedule when the detector is scored."""

from __future__ import annotations

import argparse
import sys

from flexdet.commands import parse_rates
from flexdet.data.input_spec import FRAME_RULES

SCHEDULES = ("stream", "interframe", "global", "chains")
DEFAULT_RATES = (20.0, 60.0, 90.0, 180.0)
INTERFRAME_RULES = ("auto", "stream", "flexevent")
INTERFRAME_NOTE = ("interframe: each row scores, for every pair of consecutive frames whose tracks persist, one step "
                   "whose events span delta_ms after the pair's first frame, against the labels interpolated there "
                   "(rate_hz = 1 / delta; the row with rate '-' is delta 0, the frame alone with no events). Rule "
                   "stream: the step is forked from a 20 Hz stream's state at the frame; rule flexevent "
                   "(FlexEvent's test_interframe.py): one stream through the pairs' steps only.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (RUN/checkpoints/last.pt), a run folder (its last "
                                           "checkpoint) or any flexdet model / export folder")
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--rates", help="comma-separated detection rates in Hz (default 20,60,90,180; interframe: "
                                         "DAGr's ten deltas, 0 to 50 ms after a frame)")
    parser.add_argument("--benchmark", choices=["gen1", "1mpx", "dsec2", "dsec8", "flexevent2", "flexevent8"],
                        help="scoring rules (default: those the checkpoint was trained for, else the layout's; "
                             "flexevent2/8 for a converted FlexEvent model on DSEC-Det)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=None,
                        help="stream: continuous run at each rate, every step with ground truth scored (flexdet's "
                             "own); interframe: DAGr deltas; global: the labelled instants only; chains: the same "
                             "output times from rate x window phase-shifted states, each stepped on the trained "
                             "window at its own outputs (n states, one step per output; default stream)")
    parser.add_argument("--interframe-rule", choices=INTERFRAME_RULES, default="auto",
                        help="where an interframe step's recurrent state comes from: stream (a 20 Hz stream to the "
                             "frame), flexevent (FlexEvent's test_interframe.py: the previous pair's step); auto: "
                             "flexevent for a converted FlexEvent model, else stream")
    parser.add_argument("--frame-rule", choices=FRAME_RULES, default=None,
                        help="which RGB frame a window is paired with (default: the model's own): latest_at_start "
                             "(the latest at or before the window start, as training pairs label-aligned windows) or "
                             "latest_before_end (the freshest one delivered before the window end: the same frame "
                             "on the label instants, a fresher one between them)")
    parser.add_argument("--protocol", choices=SCHEDULES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--export", default="",
                        help="comma-separated extra outputs for other tools: prophesee (toolbox box files), "
                             "coco (the scored images as COCO json)")
    parser.add_argument("--backend", choices=["torch", "onnxruntime", "tensorrt"], default="torch",
                        help="what runs the model: torch (default; every schedule), or the model as deployed: "
                             "onnxruntime (an export folder's graph, its CPU model from --target cpu on a CPU; a "
                             "checkpoint is exported on the fly) or tensorrt; stream and global schedules")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default="runs/eval", help="output folder")


def run(args: argparse.Namespace) -> int:
    from flexdet.atomic import require_output_dir
    from flexdet.errors import ConfigError
    from flexdet.evaluation.evaluate import evaluate_checkpoint
    from flexdet.evaluation.results import metrics_markdown

    require_output_dir(args.out)
    rates = parse_rates(args.rates) if args.rates else None
    schedule = args.schedule
    if args.protocol is not None:
        print("flexdet eval: --protocol is deprecated, use --schedule (a benchmark's rules are --benchmark)",
              file=sys.stderr)
        if schedule is not None and schedule != args.protocol:
            raise ConfigError(f"--protocol {args.protocol} and --schedule {schedule} disagree; pass --schedule only")
        schedule = args.protocol
    schedule = schedule or "stream"
    if rates is None and schedule != "interframe":
        rates = DEFAULT_RATES
    export = [f.strip() for f in args.export.split(",") if f.strip()]
    rows = evaluate_checkpoint(args.checkpoint, args.data, rates, schedule, args.out, args.split,
                               benchmark=args.benchmark, export=export, interframe=args.interframe_rule,
                               frame_rule=args.frame_rule, backend=args.backend)
    print(metrics_markdown(rows))
    if schedule == "interframe":
        print(INTERFRAME_NOTE)
    print(f"results in {args.out}")
    return 0
