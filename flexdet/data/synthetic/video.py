"""Turn RGB frames (a webcam, a video file) into events with the simulator's sensor model.

`VideoToEvents` keeps the pixel state between calls, so frames can be fed one at a time (live demo);
`video_file_to_events` reads a whole file with OpenCV.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from flexdet.data.events import EVENT_DTYPE
from flexdet.data.synthetic.config import SensorConfig
from flexdet.data.synthetic.sensor import EventSensor
from flexdet.data.synthetic.textures import LUMA_WEIGHTS
from flexdet.errors import FlexdetError, FormatError


@dataclass
class VideoToEvents:
    """Stateful frame -> events converter: `feed(frame, time_us)` returns the events since the last frame.

    Frames are (H, W, 3) RGB or (H, W) grey, uint8 (0-255) or float (0-1). The first frame only adapts the
    pixels. Between frames the log intensity is taken as linear in time (events' times interpolated).
    """

    width: int
    height: int
    sensor: SensorConfig = field(default_factory=SensorConfig)
    seed: int = 0
    noise: bool = False

    def __post_init__(self) -> None:
        self._pixels = EventSensor(self.width, self.height, self.sensor, self.seed)
        self._last_time: int | None = None

    def feed(self, frame: np.ndarray, time_us: int) -> np.ndarray:
        """Events (EVENT_DTYPE, time-sorted) between the previous frame and this one."""
        intensity = self._intensity(frame)
        time_us = int(time_us)
        if self._last_time is None:
            self._pixels.reset(intensity, time_us)
            self._last_time = time_us
            return np.zeros(0, EVENT_DTYPE)
        if time_us <= self._last_time:
            raise FlexdetError(f"VideoToEvents: frame time {time_us} µs is not after the previous frame "
                               f"({self._last_time} µs)")
        self._last_time = time_us
        return self._pixels.step(intensity, time_us, noise=self.noise)

    def reset(self) -> None:
        """Forget the pixel state: the next frame starts a new stream."""
        self._last_time = None

    def _intensity(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim == 3 and frame.shape[2] == 3:
            grey = frame.astype(np.float32) @ LUMA_WEIGHTS
        elif frame.ndim == 2:
            grey = frame.astype(np.float32)
        else:
            raise FlexdetError(f"VideoToEvents: expected an (H, W, 3) or (H, W) frame, got shape {frame.shape}")
        if grey.shape != (self.height, self.width):
            raise FlexdetError(f"VideoToEvents: frame is {grey.shape[1]}x{grey.shape[0]}, the converter was made "
                               f"for {self.width}x{self.height}")
        return grey / 255.0 if np.issubdtype(frame.dtype, np.integer) else grey


def read_video_frames(path: os.PathLike[str] | str, size: tuple[int, int] | None = None
                      ) -> Iterator[tuple[np.ndarray, int]]:
    """(RGB uint8 frame, time µs) pairs of a video file read with OpenCV, optionally resized to (w, h)."""
    import cv2

    capture = cv2.VideoCapture(os.fspath(path))
    if not capture.isOpened():
        raise FormatError(path, "OpenCV cannot open this file as a video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            if size is not None:
                bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), int(round(index * 1e6 / fps))
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise FormatError(path, "the video holds no readable frame")


def video_file_to_events(path: os.PathLike[str] | str, sensor: SensorConfig | None = None,
                         size: tuple[int, int] | None = None, seed: int = 0) -> np.ndarray:
    """All events of a video file converted by VideoToEvents (frame times from the file's frame rate)."""
    converter: VideoToEvents | None = None
    chunks = []
    for frame, time_us in read_video_frames(path, size):
        if converter is None:
            converter = VideoToEvents(frame.shape[1], frame.shape[0], sensor or SensorConfig(), seed)
        chunks.append(converter.feed(frame, time_us))
    return np.concatenate(chunks) if chunks else np.zeros(0, EVENT_DTYPE)
