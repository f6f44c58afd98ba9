"""Where the demo's events come from: a recording replayed in (scaled) real time, a video file or webcam
turned into events by the simulator's sensor model, or a live iniVation / Prophesee camera.

Every source yields `SourceChunk`s in time order: the events of [previous t_end, t_end) and the RGB frames
taken in that span. A source that ends or a camera that stops raises `SourceEnded` with a clear message.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flexdet.data.events import EVENT_DTYPE, empty_events
from flexdet.errors import FlexdetError, MissingDependencyError

TimedFrame = tuple[int, np.ndarray]  # (t µs, HxWx3 uint8 RGB)


class SourceEnded(FlexdetError):
    """The source has no more data (end of a recording, a camera unplugged); the message says why."""


@dataclass
class SourceChunk:
    """Events with t in [t_begin, t_end) (EVENT_DTYPE, time-sorted) and the frames taken in that span."""

    events: np.ndarray
    t_end: int
    frames: list[TimedFrame] = field(default_factory=list)


class Pacer:
    """Sleeps so that stream time t is delivered at wall time start + (t - t0) / speed; speed 0 never waits.

    Time spent paused is added to the start, so a replay resumes where it stopped.
    """

    def __init__(self, speed: float, paused: threading.Event | None = None,
                 stop: threading.Event | None = None) -> None:
        if speed < 0:
            raise FlexdetError(f"--speed must be >= 0 (0 = as fast as possible), got {speed}")
        self.speed = float(speed)
        self.paused = paused or threading.Event()
        self.stop = stop or threading.Event()
        self._t0: int | None = None
        self._wall0 = 0.0

    def wait_until(self, t_us: int) -> None:
        """Block until stream time `t_us` is due (or the demo stops)."""
        while self.paused.is_set() and not self.stop.is_set():
            pause_start = time.perf_counter()
            self.stop.wait(0.02)
            self._wall0 += time.perf_counter() - pause_start
        if self.speed == 0:
            return
        if self._t0 is None:
            self._t0, self._wall0 = int(t_us), time.perf_counter()
            return
        due = self._wall0 + (int(t_us) - self._t0) / (1e6 * self.speed)
        delay = due - time.perf_counter()
        if delay > 0:
            self.stop.wait(delay)


class EventSource:
    """Base of every source: sensor size, first stream time (None until known) and the chunk iterator."""

    width: int
    height: int
    t_start: int | None = None
    description: str = "source"
    name: str = ""  # a recording's sequence name (a FlexEvent model's hashed sub-window draws from it)
    live: bool = False  # a camera: never paced, never replayed losslessly
    has_frames: bool | None = None  # delivers RGB frames (for a model with a frame branch); None: not known

    def chunks(self, pacer: Pacer) -> Iterator[SourceChunk]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file or device."""


class RecordingSource(EventSource):
    """Replay any recording flexdet reads (with its RGB frames when it has them) in chunks of `chunk_us`."""

    def __init__(self, path: os.PathLike[str] | str, width: int | None = None, height: int | None = None,
                 chunk_us: int = 2000) -> None:
        from flexdet.data.readers import open_recording

        self.recording = open_recording(path, width, height)
        self.width, self.height = self.recording.width, self.recording.height
        self._frames = self.recording.frames() if self.recording.has_frames else iter(())
        self._first_frame: TimedFrame | None = next(self._frames, None)
        self.has_frames = self._first_frame is not None
        # With frames, steps count from the first frame (or event) so 20 Hz steps land on 20 Hz frame times.
        first_frame_t = self._first_frame[0] if self._first_frame is not None else self.recording.t_start
        self.t_start = int(min(self.recording.t_start, first_frame_t))
        self.t_stop = int(self.recording.t_end)
        self.chunk_us = int(chunk_us)
        self.name = Path(path).name
        self.description = f"{self.recording.format} recording {self.name}"

    def chunks(self, pacer: Pacer) -> Iterator[SourceChunk]:
        frames, pending = self._frames, self._first_frame
        t = self.t_start
        while t < self.t_stop:
            t_next = min(t + self.chunk_us, self.t_stop)
            pacer.wait_until(t_next)
            events = self.recording.read(t, t_next)
            taken: list[TimedFrame] = []
            while pending is not None and pending[0] < t_next:
                taken.append(pending)
                pending = next(frames, None)
            yield SourceChunk(events, t_next, taken)
            t = t_next
        raise SourceEnded(f"end of {self.description} at t={self.t_stop} µs")

    def close(self) -> None:
        self.recording.close()


class VideoSource(EventSource):
    """A video file or `webcam:N` read with OpenCV; each frame is turned into events by VideoToEvents.

    Video files are timed by their frame rate and paced like recordings; a webcam is timed by the clock.
    The RGB frames themselves are passed on too, for models with a frame branch and for the display.
    """

    has_frames = True

    def __init__(self, spec: str, width: int | None = None, height: int | None = None, seed: int = 0) -> None:
        import cv2

        self.webcam = self.live = spec.startswith("webcam:")
        self.spec = spec
        target = _webcam_index(spec) if self.webcam else os.fspath(spec)
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            raise SourceEnded(f"OpenCV cannot open {'camera' if self.webcam else 'video file'} {spec!r}")
        native = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.resize = (int(width), int(height)) if width and height else None
        self.width, self.height = self.resize or native
        if self.width <= 0 or self.height <= 0:
            raise SourceEnded(f"{spec!r}: OpenCV reports no frame size; is it a video?")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        self.seed = seed
        self.description = f"{'webcam' if self.webcam else 'video'} {spec}"

    def chunks(self, pacer: Pacer) -> Iterator[SourceChunk]:
        import cv2

        from flexdet.data.synthetic import VideoToEvents

        converter = VideoToEvents(self.width, self.height, seed=self.seed)
        index = 0
        clock0 = time.perf_counter()
        while True:
            ok, bgr = self.capture.read()
            if not ok:
                what = "camera stopped delivering frames" if self.webcam else "end of video"
                raise SourceEnded(f"{what}: {self.spec} after {index} frames")
            if self.resize is not None:
                bgr = cv2.resize(bgr, self.resize, interpolation=cv2.INTER_AREA)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if self.webcam:
                t = int((time.perf_counter() - clock0) * 1e6)
            else:
                t = int(round(index * 1e6 / self.fps))
                pacer.wait_until(t)
            index += 1
            if self.t_start is None:
                self.t_start = t
            events = converter.feed(rgb, t)
            yield SourceChunk(events, t + 1, [(t, rgb)])

    def close(self) -> None:
        self.capture.release()


class DvCameraSource(EventSource):
    """A live iniVation camera (DVXplorer, DAVIS) through dv-processing; `dv:` opens the first one found,
    `dv:NAME` a named one. DAVIS APS frames are passed on as RGB frames."""

    live = True

    def __init__(self, spec: str) -> None:
        try:
            import dv_processing as dv
        except ImportError:
            raise MissingDependencyError("dv-processing", "the dv: camera source") from None
        name = spec.partition(":")[2]
        try:
            self.camera = dv.io.CameraCapture(name) if name else dv.io.CameraCapture()
        except RuntimeError as exc:
            raise SourceEnded(f"no iniVation camera {name or '(any)'} could be opened: {exc}") from None
        if not self.camera.isEventStreamAvailable():
            raise SourceEnded(f"iniVation camera {self.camera.getCameraName()} has no event stream")
        self.width, self.height = (int(v) for v in self.camera.getEventResolution())
        self.has_frames = bool(self.camera.isFrameStreamAvailable())
        self.description = f"iniVation camera {self.camera.getCameraName()}"

    def chunks(self, pacer: Pacer) -> Iterator[SourceChunk]:
        import cv2

        with_frames = self.camera.isFrameStreamAvailable()
        last_t = None
        while not pacer.stop.is_set():
            if not self.camera.isRunning():
                raise SourceEnded(f"{self.description} disconnected")
            batch = self.camera.getNextEventBatch()
            frames: list[TimedFrame] = []
            if with_frames:
                frame = self.camera.getNextFrame()
                if frame is not None:
                    image = frame.image if frame.image.ndim == 3 else cv2.cvtColor(frame.image, cv2.COLOR_GRAY2BGR)
                    frames.append((int(frame.timestamp), cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
            if batch is None or batch.size() == 0:
                pacer.stop.wait(0.001)
                continue
            raw = batch.numpy()
            events = np.empty(len(raw), EVENT_DTYPE)
            events["t"], events["x"], events["y"] = raw["timestamp"], raw["x"], raw["y"]
            events["p"] = raw["polarity"].astype(np.uint8)
            last_t = int(events["t"][-1]) + 1 if last_t is None else max(last_t, int(events["t"][-1]) + 1)
            if self.t_start is None:
                self.t_start = int(events["t"][0])
            yield SourceChunk(events, last_t, frames)


class MetavisionSource(EventSource):
    """A live Prophesee camera through the Metavision SDK; `prophesee:` opens the first camera,
    `prophesee:SERIAL` a given one."""

    live = True
    has_frames = False

    def __init__(self, spec: str, chunk_us: int = 2000) -> None:
        try:
            from metavision_core.event_io import EventsIterator
        except ImportError:
            raise MissingDependencyError("metavision_core", "the prophesee: camera source",
                                         "install the Prophesee Metavision SDK; it is not on PyPI") from None
        serial = spec.partition(":")[2]
        try:
            self.iterator = EventsIterator(input_path=serial, mode="delta_t", delta_t=int(chunk_us))
        except Exception as exc:  # the SDK raises plain RuntimeError/OSError types that vary by version
            raise SourceEnded(f"no Prophesee camera {serial or '(any)'} could be opened: {exc}") from None
        self.height, self.width = (int(v) for v in self.iterator.get_size())
        self.chunk_us = int(chunk_us)
        self.description = f"Prophesee camera {serial or '(first found)'}"

    def chunks(self, pacer: Pacer) -> Iterator[SourceChunk]:
        t_end = None
        for raw in self.iterator:
            if pacer.stop.is_set():
                return
            events = np.empty(len(raw), EVENT_DTYPE)
            events["t"], events["x"], events["y"], events["p"] = raw["t"], raw["x"], raw["y"], raw["p"]
            if self.t_start is None:
                self.t_start = int(events["t"][0]) if len(events) else 0
                t_end = self.t_start
            t_end = max(t_end + self.chunk_us, int(events["t"][-1]) + 1 if len(events) else 0)
            yield SourceChunk(events if len(events) else empty_events(0), t_end)
        raise SourceEnded(f"{self.description} stopped streaming")


def open_source(spec: str, width: int | None = None, height: int | None = None) -> EventSource:
    """The source a `--source` string names: `webcam:N`, `dv:[NAME]`, `prophesee:[SERIAL]`, a video file
    (.mp4/.avi/.mov/.mkv/.webm) or any recording flexdet reads."""
    if spec.startswith("webcam:"):
        return VideoSource(spec, width, height)
    if spec.startswith("dv:"):
        return DvCameraSource(spec)
    if spec.startswith("prophesee:"):
        return MetavisionSource(spec)
    if Path(spec).suffix.lower() in VIDEO_SUFFIXES:
        if not Path(spec).is_file():
            raise SourceEnded(f"{spec}: no such video file")
        return VideoSource(spec, width, height)
    return RecordingSource(spec, width, height)


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def _webcam_index(spec: str) -> int:
    try:
        return int(spec.partition(":")[2] or 0)
    except ValueError:
        raise FlexdetError(f"--source {spec!r}: expected webcam:N with N a camera index, e.g. webcam:0") from None
