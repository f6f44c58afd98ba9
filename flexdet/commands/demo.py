"""Live detection demo: an event recording (replayed in real time), a video file or webcam (turned into
events), or an iniVation / Prophesee camera, with boxes drawn at the chosen detection rate.

Keys in the window: + / - change the rate, o toggles the event overlay, space pauses, s saves a snapshot,
q or Esc quits.
Headless (--headless --out demo.mp4 --log detections.jsonl) writes one video frame and one JSON line per
detection step, for every window of a recording or video file (unless --speed asks for a paced replay).
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet demo`."""
    parser.add_argument("--source", required=True,
                        help="recording path (.dat/.raw/.h5/.aedat4/.npz or DSEC sequence folder), video file, "
                             "webcam:N, dv:[NAME] (iniVation) or prophesee:[SERIAL]")
    parser.add_argument("--model",
                        help="directory written by flexdet export, .onnx, .pt checkpoint, or preset name "
                             "(random weights)")
    parser.add_argument("--server", help="run the model on a `flexdet serve` server at this URL instead "
                                         "(http://HOST:PORT or grpc://HOST:PORT)")
    parser.add_argument("--stream-id", type=int, help="--server: this stream's id (default: the process id)")
    parser.add_argument("--rate", default="20", help="detection rate in Hz (default 20)")
    parser.add_argument("--schedule", choices=("chains", "stream"),
                        help="which recurrent state each step advances: chains (default; round(rate x window) "
                             "states in turn, each on the trained window: the schedule `flexdet eval --schedule "
                             "chains` scores) or stream (one state at every step; the default with --server, whose "
                             "server keeps one state per stream)")
    parser.add_argument("--backend", default="auto", help="runtime backend: auto | torch | onnxruntime | tensorrt")
    parser.add_argument("--device", help="torch device for the torch backend, e.g. cuda")
    parser.add_argument("--speed", type=float, default=None,
                        help="replay speed of recordings and video files (1 = real time, windows the model cannot "
                             "keep up with dropped; 0 = as fast as possible, every window processed; default 1 in a "
                             "window, 0 headless)")
    parser.add_argument("--headless", action="store_true", help="no window; write --out and/or --log")
    parser.add_argument("--out", help="write an MP4 video with one frame per detection step")
    parser.add_argument("--log", help="write one JSON line of detections per step")
    parser.add_argument("--score-thresh", type=float, default=0.3, help="minimum score of a drawn box")
    parser.add_argument("--duration", type=float, help="stop after this many seconds of stream time")
    parser.add_argument("--width", type=int, help="sensor width when the file does not say; resize width for videos")
    parser.add_argument("--height", type=int, help="sensor height when the file does not say; resize height for videos")
    parser.add_argument("--queue", type=int, default=2, help="windows waiting for the model at most (default 2)")
    parser.add_argument("--on-overload", choices=["drop", "merge"], default="drop",
                        help="when the model falls behind: drop the oldest window or merge it into the next")
    parser.add_argument("--max-boxes", type=int, default=50, help="draw at most this many boxes (highest scores)")
    parser.add_argument("--snapshot", help="save the last rendered frame as PNG (the s key saves one any time)")


def run(args: argparse.Namespace) -> int:
    from flexdet.atomic import require_output_file
    from flexdet.demo import DemoConfig, load_detector, open_source, print_summary, run_demo
    from flexdet.demo.sinks import display_available
    from flexdet.errors import ConfigError

    for option, path in (("--out", args.out), ("--log", args.log), ("--snapshot", args.snapshot)):
        if path:
            require_output_file(path, option)

    if bool(args.model) == bool(args.server):
        raise ConfigError("give either --model or --server")
    headless = args.headless
    if not headless and not display_available():  # a server or an ssh session: headless is the default there
        if not (args.out or args.log):
            raise ConfigError("no display to show the window on (DISPLAY is not set): run with --headless --out "
                              "demo.mp4 and/or --log detections.jsonl")
        print("note: no display (DISPLAY is not set): running headless")
        headless = True
    config = DemoConfig(source=args.source, model=args.model or args.server, rate_hz=args.rate, backend=args.backend,
                        device=args.device, speed=args.speed, headless=headless, out=args.out, log=args.log,
                        score_thresh=args.score_thresh, duration_s=args.duration, width=args.width,
                        height=args.height, queue_size=args.queue, overload=args.on_overload,
                        max_boxes=args.max_boxes, snapshot=args.snapshot)
    config.validate()
    source = open_source(config.source, config.width, config.height)
    try:
        if args.server:
            if args.schedule == "chains":
                raise ConfigError("--schedule chains runs several states per camera; a server keeps one per stream "
                                  "(use --schedule stream, or --model to run the chains here)")
            detector = _server_detector(args.server, args.stream_id or os.getpid(), source.width, source.height,
                                        config.score_thresh)
        else:
            detector = load_detector(config.model, config.backend, source.width, source.height, config.score_thresh,
                                     config.device, args.schedule or "chains", config.rate_hz)
    except BaseException:
        source.close()
        raise
    print_summary(run_demo(config, source, detector))
    return 0


def _server_detector(url: str, stream_id: int, width: int, height: int, score_thresh: float):
    """The demo's StepDetector over stream `stream_id` of the model served at `url` (a width x height camera)."""
    from flexdet.demo.detector import StepDetector
    from flexdet.errors import ConfigError
    from flexdet.serving import Client

    if not 0 <= score_thresh <= 1:
        raise ConfigError(f"--score-thresh must be in [0, 1], got {score_thresh}")
    runtime = Client(url).stream(stream_id, conf_thresh=score_thresh)
    note = runtime.fit_camera(width, height)
    if note:
        print(f"note: {note}")
    return StepDetector(runtime, schedule="stream")
