"""Where rendered steps go: an OpenCV window with keyboard controls, an MP4 file (one video frame per
detection step, written at the detection rate), and a JSON-lines log of every step's detections.

Files are written to a temporary name and renamed when the demo ends normally (flexdet.atomic).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from flexdet.atomic import atomic_path
from flexdet.errors import FlexdetError


class _AtomicFile:
    """An atomic_path held open for the whole demo: `commit()` renames it into place, `discard()` removes it."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = Path(path)
        self._context = atomic_path(self.path)
        self.tmp = self._context.__enter__()

    def commit(self) -> None:
        self._context.__exit__(None, None, None)

    def discard(self) -> None:
        self._context.__exit__(FlexdetError, FlexdetError("discarded"), None)


# MPEG-4 part 2 stores the frame period as 1/fps with a 16-bit denominator: faster videos cannot be written.
MAX_VIDEO_FPS = 65535


class VideoSink:
    """MP4 (mp4v) at `fps` frames per second; every `write` is one frame of exactly the first frame's size."""

    def __init__(self, path: os.PathLike[str] | str, fps: float) -> None:
        self.file = _AtomicFile(path)
        self.fps = float(fps)
        self.writer = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image_bgr: np.ndarray) -> None:
        import cv2

        height, width = image_bgr.shape[:2]
        if self.writer is None:
            self.size = (width + width % 2, height + height % 2)  # many encoders need even sizes
            self.writer = cv2.VideoWriter(os.fspath(self.file.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          self.size)
            if not self.writer.isOpened():
                self.file.discard()
                raise FlexdetError(f"{self.file.path}: OpenCV cannot write an mp4v video here (FFMPEG support?)")
        if (width + width % 2, height + height % 2) != self.size:
            raise FlexdetError(f"video frame size changed from {self.size} to {(width, height)}")
        if (width, height) != self.size:
            image_bgr = np.pad(image_bgr, ((0, self.size[1] - height), (0, self.size[0] - width), (0, 0)))
        self.writer.write(image_bgr)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if self.writer is not None:
            self.writer.release()
        if keep and self.frames:
            self.file.commit()
        else:
            self.file.discard()


class JsonlSink:
    """One JSON object per detection step: step, t (window end, µs), t_start, boxes (xyxy px), scores,
    labels, class names, merged step count and latency."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.file = _AtomicFile(path)
        self.handle = open(self.file.tmp, "w", encoding="utf-8")
        self.lines = 0

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self, keep: bool = True) -> None:
        self.handle.close()
        if keep:
            self.file.commit()
        else:
            self.file.discard()


def detection_record(step_index: int, t_start: int, t_end: int, boxes: np.ndarray, scores: np.ndarray,
                     labels: np.ndarray, class_names: list[str], merged: int, latency_ms: float) -> dict:
    """The JSON-lines record of one step (boxes rounded to 0.01 px; scores exact, so their order is kept)."""
    labels = np.asarray(labels, np.int64)
    return {"step": int(step_index), "t": int(t_end), "t_start": int(t_start),
            "boxes": np.round(np.asarray(boxes, np.float64), 2).tolist(),
            "scores": np.asarray(scores, np.float64).tolist(), "labels": labels.tolist(),
            "names": [class_names[k] if k < len(class_names) else f"class {k}" for k in labels.tolist()],
            "merged": int(merged), "latency_ms": round(float(latency_ms), 3)}


def display_available() -> bool:
    """Whether a window can be shown: on Linux an X11 or Wayland display must be named; elsewhere assume so."""
    import sys

    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class WindowSink:
    """An OpenCV window; `show` returns the key pressed (or -1). Needs OpenCV with GUI support."""

    def __init__(self, title: str = "flexdet demo") -> None:
        import cv2

        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise FlexdetError("this OpenCV build has no GUI support (opencv-python-headless): run with "
                               "--headless --out demo.mp4, or install opencv-python for a window") from None

    def show(self, image_bgr: np.ndarray, wait_ms: int = 1) -> int:
        import cv2

        cv2.imshow(self.title, image_bgr)
        key = cv2.waitKey(max(1, int(wait_ms)))
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return 27  # the window was closed with the mouse: treat as Esc
        return key & 0xFF if key >= 0 else -1

    def close(self, keep: bool = True) -> None:
        import cv2

        cv2.destroyWindow(self.title)
