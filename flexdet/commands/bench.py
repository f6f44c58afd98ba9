"""Benchmark the streaming runtime: steps/s and p50/p99 latency of representation, inference,
post-processing and end to end, on synthetic uniform events at a given rate or on a recording."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet bench`."""
    parser.add_argument("--model", help="export folder, .onnx, .pt, .engine or a preset name (with --server: also "
                                        "run the streams in process for comparison)")
    parser.add_argument("--backend", default="auto", choices=("torch", "onnxruntime", "tensorrt", "auto"),
                        help="what runs the network (default: auto = TensorRT where it imports and CUDA is there, "
                             "torch on another CUDA device, else onnxruntime; with onnxruntime an export folder's "
                             "CPU model is used when `flexdet export --target cpu` wrote one)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--height", type=int, help="input height for a preset / bare checkpoint (default 240)")
    parser.add_argument("--width", type=int, help="input width for a preset / bare checkpoint (default 304)")
    parser.add_argument("--frames", action=argparse.BooleanOptionalAction, default=False,
                        help="preset with the RGB branch (a frame every --frame-every steps)")
    parser.add_argument("--frame-every", type=int, default=50, help="steps between new frames (fused models)")
    parser.add_argument("--step-us", type=int, default=1000, help="time between steps (1000 us = 1 kHz)")
    parser.add_argument("--event-rate", type=float, default=1e6, help="synthetic event rate, events/s")
    parser.add_argument("--events-per-step", type=int, help="events per window (overrides --event-rate)")
    parser.add_argument("--recording", help="take the events from this recording instead")
    parser.add_argument("--device", default=None, help="torch / tensorrt device (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--compile", action="store_true", help="torch backend: torch.compile")
    parser.add_argument("--cuda-graphs", action="store_true", help="torch backend: CUDA graphs")
    parser.add_argument("--schedule", choices=("stream", "chains"), default="stream",
                        help="stream: one state stepped at every step; chains: the chains schedule at the rate "
                             "1e6 / --step-us (round(rate x window) states in turn, what `flexdet demo` runs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--server", help="a `flexdet serve` URL (http://HOST:PORT or grpc://HOST:PORT): steps/s and "
                                         "p50/p99 per step of --streams streams, batched by the server and not")
    parser.add_argument("--streams", type=int, default=8, help="--server: concurrent streams (default 8)")


def run(args: argparse.Namespace) -> int:
    """Load the runtime, stream the events through it, print the figures."""
    from flexdet.errors import ConfigError

    check_options(args)
    if args.server:
        return _run_server(args)
    if not args.model:
        raise ConfigError("give --model (or --server URL)")
    from fractions import Fraction

    from flexdet.export.benchmark import benchmark, recording_events, uniform_events
    from flexdet.export.runtime import load_runtime
    from flexdet.export.runtime.chains import ChainedRuntime

    opts = {"use_frames": args.frames}
    if args.backend == "onnxruntime" and args.threads:
        opts["intra_op_num_threads"] = args.threads
    if args.backend == "torch":
        opts.update(compile=args.compile, cuda_graphs=args.cuda_graphs)
    events = height = width = None
    if args.recording:
        events, height, width = recording_events(args.recording, 0)  # size first, events once the window is known
    if args.height and args.width:
        height, width = args.height, args.width
    if height and width:
        opts.update(height=height, width=width)
    runtime = load_runtime(args.model, backend=args.backend, device=args.device, **opts)
    try:
        window_us = runtime.spec.window_us
        duration = window_us + (args.warmup + args.steps) * args.step_us
        if args.recording:
            events, _, _ = recording_events(args.recording, duration)
        else:
            rate = args.event_rate if args.events_per_step is None else args.events_per_step * 1e6 / window_us
            events = uniform_events(*runtime.sensor_size, rate, duration)
        stepper = runtime
        if args.schedule == "chains":
            stepper = ChainedRuntime(runtime, Fraction(1_000_000, args.step_us))
        report = benchmark(stepper, events, args.steps, args.step_us, args.warmup, args.frame_every)
    finally:
        runtime.close()
    report["model"], report["schedule"] = args.model, args.schedule
    model_file = getattr(runtime.backend, "path", None)
    report["model_file"] = None if model_file is None else str(model_file)
    report["session"] = getattr(runtime.backend, "session_options", None)
    report["states"] = getattr(stepper, "count", 1)
    report["height"], report["width"] = runtime.sensor_size
    if args.json:
        print(json.dumps(report))
        return 0
    graph = f" ({Path(report['model_file']).name}, {report['session'] or 'default settings'})" \
        if report["model_file"] else ""
    print(f"{args.model} on {report['backend']}{graph} at {report['height']}x{report['width']}, "
          f"{report['events_per_step']:.0f} events/step, schedule {args.schedule} ({report['states']} states): "
          f"{report['steps_per_s']:.1f} steps/s")
    print(f"{'stage':<16}{'p50 ms':>10}{'p99 ms':>10}")
    for stage in ("representation", "inference", "postprocess", "total"):
        print(f"{stage:<16}{report[stage + '_ms_p50']:>10.3f}{report[stage + '_ms_p99']:>10.3f}")
    print(frame_encoder_line(report, runtime.metadata.use_frames, args.frame_every, args.steps))
    return 0


def frame_encoder_line(report: dict, use_frames: bool, frame_every: int, steps: int) -> str:
    """Whether and how often the frame encoder ran in the timed steps (its time is part of "inference")."""
    if not use_frames:
        return "frame encoder: none (event-only model)"
    runs = report["frame_encoder_runs"]
    return (f"frame encoder: ran {runs} times in {steps} timed steps (a new frame every {frame_every} steps; "
            f"its time is inside inference)")


_POSITIVE = ("steps", "step_us", "frame_every", "height", "width", "threads", "streams")


def check_options(args: argparse.Namespace) -> None:
    """Refuse impossible option values before anything loads (a model can take seconds to export or build)."""
    from flexdet.errors import ConfigError

    for name in _POSITIVE:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("warmup", "events_per_step"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if not args.event_rate > 0 or args.event_rate == float("inf"):
        raise ConfigError(f"--event-rate must be a positive number of events per second, got {args.event_rate}")
    if bool(args.height) != bool(args.width):
        raise ConfigError("give --height and --width together")


def _run_server(args: argparse.Namespace) -> int:
    """`--server`: the load table of flexdet.serving.load.server_load."""
    from functools import partial

    from flexdet.export.runtime import load_runtime
    from flexdet.serving.load import server_load

    local = partial(load_runtime, args.model, backend="onnxruntime", intra_op_num_threads=args.threads or 1) \
        if args.model else None
    rows = server_load(args.server, args.streams, args.steps, args.warmup, args.step_us, args.event_rate, local)
    if args.json:
        print(json.dumps({"server": args.server, "rows": rows}))
        return 0
    print(f"{args.server}: {args.streams} streams, {args.steps} timed steps each, one step = {args.step_us} us")
    print(f"{'mode':<18}{'steps/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'steps/call':>12}")
    for row in rows:
        print(f"{row['mode']:<18}{row['steps_per_s']:>10.1f}{row['step_ms_p50']:>10.2f}{row['step_ms_p99']:>10.2f}"
              f"{row['mean_batch']:>12.2f}")
    return 0
