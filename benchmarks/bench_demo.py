"""Demo overhead per detection step vs. the model step itself (same run, same machine): window cutting,
drawing, MP4 + JSON-lines writing. Target: overhead well under the model's step time (ratio < 0.25).

    python benchmarks/bench_demo.py [--recording PATH] [--rate 20] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


from flexdet.data.clock import StepClock
from flexdet.demo.pipeline import WindowAssembler
from flexdet.demo.render import RenderOptions, render_frame
from flexdet.demo.sinks import JsonlSink, VideoSink, detection_record
from flexdet.demo.sources import Pacer, RecordingSource, SourceEnded
from flexdet.export import load_runtime

DEFAULT = Path(__file__).parents[1] / ".." / "shared" / "data" / "real" / "dvxplorer_320x240.aedat4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recording", default=str(DEFAULT))
    parser.add_argument("--rate", default="20")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args()
    source = RecordingSource(args.recording)
    runtime = load_runtime("nano", backend=args.backend, height=source.height, width=source.width, conf_thresh=0.0)
    assembler = WindowAssembler(runtime.spec.window_us, StepClock(source.t_start, args.rate))
    cut = model = draw = write = 0.0
    steps = 0
    with tempfile.TemporaryDirectory() as folder:
        video, log = VideoSink(Path(folder) / "b.mp4", float(args.rate)), JsonlSink(Path(folder) / "b.jsonl")
        chunks = source.chunks(Pacer(0))
        try:
            while steps < args.steps:
                t0 = time.perf_counter()
                made = assembler.feed(next(chunks))
                cut += time.perf_counter() - t0
                for step in made[:args.steps - steps]:
                    t1 = time.perf_counter()
                    out = runtime.step(step.events, t_end=step.t_end)
                    t2 = time.perf_counter()
                    image = render_frame(source.width, source.height, step.events, out["boxes"], out["scores"],
                                         out["labels"], "bench", None, RenderOptions(max_boxes=50))
                    t3 = time.perf_counter()
                    video.write(image)
                    log.write(detection_record(step.index, step.t_start, step.t_end, out["boxes"], out["scores"],
                                               out["labels"], runtime.metadata.classes, 0, 0.0))
                    t4 = time.perf_counter()
                    model, draw, write, steps = model + t2 - t1, draw + t3 - t2, write + t4 - t3, steps + 1
        except SourceEnded:
            pass
        video.close(keep=False)
        log.close(keep=False)
    overhead = cut + draw + write
    print(f"{steps} steps at {source.width}x{source.height}, {args.rate} Hz, backend {args.backend}")
    for name, value in (("window cutting", cut), ("drawing", draw), ("mp4+jsonl", write), ("model step", model)):
        print(f"  {name:15s} {1e3 * value / steps:8.2f} ms/step")
    print(f"  overhead / model step = {overhead / model:.3f} (baseline: the model step, same run)")


if __name__ == "__main__":
    main()
