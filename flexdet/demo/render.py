"""Drawing one demo frame with OpenCV: the RGB frame (or a grey canvas), events in two colours, boxes with
class name and score, and a status bar below the image. Images are BGR uint8, as OpenCV writes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# BGR colours. Events: ON light blue, OFF red. Boxes: saturated colours far from both and from grey.
ON_COLOUR = (255, 170, 60)
OFF_COLOUR = (60, 60, 235)
BOX_COLOURS = ((0, 255, 0), (0, 255, 255), (255, 0, 255), (0, 140, 255), (255, 255, 0), (128, 0, 255),
               (0, 255, 128), (255, 0, 128))
CANVAS_GREY = 96
STATUS_HEIGHT = 22
MIN_DISPLAY_HEIGHT = 360


def box_colour(label: int) -> tuple[int, int, int]:
    """The BGR colour boxes of class `label` are drawn in."""
    return BOX_COLOURS[int(label) % len(BOX_COLOURS)]


def display_scale(height: int) -> int:
    """Integer upscaling applied to small sensors so boxes and text stay readable (1 for >= 360 px)."""
    return max(1, -(-MIN_DISPLAY_HEIGHT // int(height)))


@dataclass
class RenderOptions:
    """What to draw: event overlay on/off, box line thickness, how many boxes at most (highest scores)."""

    overlay: bool = True
    thickness: int = 2
    max_boxes: int = 50
    class_names: Sequence[str] = field(default_factory=tuple)


def render_frame(width: int, height: int, events: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                 labels: np.ndarray, status: str, frame_rgb: np.ndarray | None = None,
                 options: RenderOptions | None = None) -> np.ndarray:
    """The BGR image of one step: (height * s + status bar, width * s, 3), s = display_scale(height).

    boxes are (N, 4) xyxy in sensor pixels; events are EVENT_DTYPE within the sensor.
    """
    import cv2

    options = options or RenderOptions()
    image = _canvas(width, height, frame_rgb)
    if options.overlay and len(events):
        _draw_events(image, events)
    scale = display_scale(height)
    if scale > 1:
        image = cv2.resize(image, (width * scale, height * scale), interpolation=cv2.INTER_NEAREST)
    _draw_boxes(image, np.asarray(boxes, np.float64) * scale, np.asarray(scores), np.asarray(labels), options)
    bar = np.zeros((STATUS_HEIGHT, image.shape[1], 3), np.uint8)
    cv2.putText(bar, status, (4, STATUS_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1,
                cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate((image, bar), axis=0))


def _canvas(width: int, height: int, frame_rgb: np.ndarray | None) -> np.ndarray:
    import cv2

    if frame_rgb is None:
        return np.full((height, width, 3), CANVAS_GREY, np.uint8)
    frame = np.asarray(frame_rgb)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.shape[:2] != (height, width):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame.astype(np.uint8), cv2.COLOR_RGB2BGR)


def _draw_events(image: np.ndarray, events: np.ndarray) -> None:
    """Paint each event's pixel in its polarity colour (later events on top)."""
    on = events["p"] == 1
    image[events["y"][on], events["x"][on]] = ON_COLOUR
    image[events["y"][~on], events["x"][~on]] = OFF_COLOUR


def _draw_boxes(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                options: RenderOptions) -> None:
    """Boxes in ascending score order, so the most confident box and its label are drawn last (on top)."""
    import cv2

    order = np.argsort(scores, kind="stable")[-options.max_boxes:] if len(scores) else []
    for i in order:
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        colour = box_colour(int(labels[i]))
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, options.thickness)
        label = int(labels[i])
        name = options.class_names[label] if label < len(options.class_names) else f"class {label}"
        score = float(scores[i])
        text = f"{name} {score:.2f}" if score >= 0.01 else f"{name} {score:.0e}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(image, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, cv2.FILLED)
        cv2.putText(image, text, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)


def status_text(achieved_hz: float, target_hz: float, latency_ms: float, event_rate: float, dropped: int,
                merged: int, paused: bool = False) -> str:
    """The status bar line: achieved vs. asked detection rate, latency, event rate, dropped/merged windows."""
    text = (f"{achieved_hz:5.1f}/{target_hz:g} Hz  latency {latency_ms:5.1f} ms  {event_rate / 1e6:6.3f} Mev/s"
            f"  dropped {dropped}  merged {merged}")
    return text + ("  [paused]" if paused else "")
