"""The demo loop: source thread -> bounded window queue -> model -> render -> window / MP4 / JSON lines.

The model runs in the calling thread (OpenCV windows must be driven from it); the source runs in its own
thread and never waits for the model except in lossless replay (`speed=0`, recordings and video files; the
default headless, where nobody watches the clock and the files should hold every window).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

from flexdet.atomic import atomic_write_bytes
from flexdet.data.clock import exact_rate
from flexdet.demo.detector import StepDetector
from flexdet.demo.pipeline import Producer, WindowQueue
from flexdet.demo.render import RenderOptions, render_frame, status_text
from flexdet.demo.sinks import MAX_VIDEO_FPS, JsonlSink, VideoSink, WindowSink, detection_record
from flexdet.demo.sources import EventSource, Pacer, SourceEnded
from flexdet.errors import ConfigError, FlexdetError

RATE_FACTOR = Fraction(5, 4)  # +/- multiply/divide the detection rate by this


@dataclass
class DemoConfig:
    """Every option of `flexdet demo`; see the command's help for each."""

    source: str
    model: str
    rate_hz: str = "20"
    backend: str = "auto"
    device: str | None = None
    speed: float | None = None  # None: 0 (every window) headless, 1 (real time) in a window
    headless: bool = False
    out: str | None = None
    log: str | None = None
    score_thresh: float = 0.3
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    queue_size: int = 2
    overload: str = "drop"
    max_boxes: int = 50
    snapshot: str | None = None

    @property
    def replay_speed(self) -> float:
        """The replay speed: --speed, else 0 headless (a file gets every window), 1 in a window (real time)."""
        if self.speed is not None:
            return float(self.speed)
        return 0.0 if self.headless else 1.0

    def validate(self) -> None:
        rate = exact_rate(self.rate_hz)
        if self.out and rate > MAX_VIDEO_FPS:
            raise ConfigError(f"--rate {self.rate_hz}: an MP4 video (--out) holds at most {MAX_VIDEO_FPS} frames per "
                              "second, one per detection step; lower --rate or leave out --out")
        if self.headless and not (self.out or self.log):
            raise ConfigError("--headless needs --out VIDEO.mp4 and/or --log detections.jsonl")
        if self.speed is not None and self.speed < 0:
            raise ConfigError(f"--speed must be >= 0, got {self.speed}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"--duration must be positive, got {self.duration_s}")


@dataclass
class DemoSummary:
    """How a demo run went."""

    steps: int
    dropped: int
    merged: int
    end_reason: str
    achieved_hz: float
    mean_latency_ms: float
    max_queue_length: int


class Controls:
    """State the keyboard changes and the source thread reads: rate, pause, stop, overlay."""

    def __init__(self, rate_hz: str) -> None:
        self._rate = exact_rate(rate_hz)
        self._lock = threading.Lock()
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.overlay = True
        self.snapshot_requested = False

    @property
    def rate(self) -> Fraction:
        with self._lock:
            return self._rate

    def scale_rate(self, factor: Fraction) -> None:
        with self._lock:
            self._rate = max(Fraction(1, 10), min(Fraction(10_000), self._rate * factor))

    def handle_key(self, key: int) -> bool:
        """Apply a key press; False when the demo should quit (q or Esc)."""
        if key in (ord("q"), 27):
            return False
        if key in (ord("+"), ord("=")):
            self.scale_rate(RATE_FACTOR)
        elif key in (ord("-"), ord("_")):
            self.scale_rate(1 / RATE_FACTOR)
        elif key == ord("o"):
            self.overlay = not self.overlay
        elif key == ord("s"):
            self.snapshot_requested = True
        elif key == ord(" "):
            if self.paused.is_set():
                self.paused.clear()
            else:
                self.paused.set()
        return True


class RateMeter:
    """Achieved steps per second over the last `span` completions, and a smoothed latency."""

    def __init__(self, span: int = 20) -> None:
        self.times: deque[float] = deque(maxlen=span)
        self.latency_ms = 0.0
        self.latency_sum = 0.0
        self.count = 0

    def add(self, done: float, latency_ms: float) -> None:
        self.times.append(done)
        self.latency_ms = latency_ms if self.count == 0 else 0.8 * self.latency_ms + 0.2 * latency_ms
        self.latency_sum += latency_ms
        self.count += 1

    @property
    def hz(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def run_demo(config: DemoConfig, source: EventSource, detector: StepDetector) -> DemoSummary:
    """Run the demo until the source ends, the duration is reached or the user quits; close everything."""
    config.validate()
    controls = Controls(config.rate_hz)
    queue = WindowQueue(config.queue_size, config.overload)
    pacer = Pacer(config.replay_speed, controls.paused, controls.stop)
    lossless = config.replay_speed == 0 and not getattr(source, "live", False)
    if detector.metadata.use_frames and getattr(source, "has_frames", None) is False:
        print(f"note: the model fuses events with RGB frames but {source.description} has none: it runs without "
              "a frame (its frame features stay empty), so expect poorer boxes than with frames", file=sys.stderr)
    producer = Producer(source, queue, detector.window_us, config.rate_hz, pacer, config.duration_s, lossless,
                        current_rate=lambda: controls.rate, frame_rule=detector.runtime.spec.frame_rule)
    video = VideoSink(config.out, float(controls.rate)) if config.out else None
    log = JsonlSink(config.log) if config.log else None
    window = None if config.headless else WindowSink(f"flexdet demo: {source.description}")
    options = RenderOptions(max_boxes=config.max_boxes, class_names=detector.class_names)
    meter = RateMeter()
    ok = False
    detector.sequence = source.name
    detector.warm_up()  # before the replay clock starts, so real-time replay drops no window at the start
    producer.start()
    try:
        last_image = None
        while True:
            step = queue.get(timeout=0.05)
            if step is None:
                if queue.closed:
                    break
                if window is not None and last_image is not None and not controls.handle_key(window.show(last_image)):
                    break
                continue
            detector.set_rate(controls.rate)
            found = detector(step)
            done = time.perf_counter()
            latency_ms = (done - step.ready_time) * 1e3
            meter.add(done, latency_ms)
            window_s = max(step.t_end - step.t_start, 1) / 1e6
            status = status_text(meter.hz, float(controls.rate), meter.latency_ms, len(step.events) / window_s,
                                 queue.dropped, queue.merged, controls.paused.is_set())
            options.overlay = controls.overlay
            frame = step.display_frame[1] if step.display_frame is not None else None
            last_image = render_frame(source.width, source.height, step.events, found.boxes, found.scores,
                                      found.labels, status, frame, options)
            if video is not None:
                video.write(last_image)
            if log is not None:
                log.write(detection_record(step.index, step.t_start, step.t_end, found.boxes, found.scores,
                                           found.labels, detector.class_names, step.merged, latency_ms))
            if window is not None and not controls.handle_key(window.show(last_image)):
                break
            if controls.snapshot_requested:
                save_snapshot(config.snapshot or "demo_snapshot.png", last_image)
                controls.snapshot_requested = False
        ok = True
        if config.snapshot and last_image is not None:
            save_snapshot(config.snapshot, last_image)
    finally:
        controls.stop.set()
        queue.close("stopped by the user")
        producer.join(timeout=5)
        source.close()
        detector.close()
        for sink in (video, log, window):
            if sink is not None:
                sink.close(keep=ok)
    if queue.error is not None and not isinstance(queue.error, SourceEnded):
        raise queue.error if isinstance(queue.error, FlexdetError) else FlexdetError(queue.end_reason)
    return DemoSummary(meter.count, queue.dropped, queue.merged, queue.end_reason or "", meter.hz,
                       meter.latency_sum / max(meter.count, 1), queue.max_length)


def save_snapshot(path: str, image_bgr) -> None:
    """Write a rendered frame as PNG (atomically)."""
    import cv2

    ok, encoded = cv2.imencode(".png", image_bgr)
    if not ok:
        raise FlexdetError(f"{path}: OpenCV could not encode the snapshot as PNG")
    atomic_write_bytes(path, encoded.tobytes())


def print_summary(summary: DemoSummary, stream=None) -> None:
    """One line: why the demo ended and what it did (on `stream`, default the current sys.stderr: a default
    bound at import would keep writing to whatever stderr was then, even once it is closed)."""
    print(f"demo ended: {summary.end_reason}. {summary.steps} steps at {summary.achieved_hz:.1f} Hz, mean latency "
          f"{summary.mean_latency_ms:.1f} ms, {summary.dropped} windows dropped, {summary.merged} merged",
          file=stream if stream is not None else sys.stderr)
