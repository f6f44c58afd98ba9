"""The model's input frame: a sensor's crop and integer downscale, applied to events, RGB frames and boxes alike."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from flexdet.errors import ConfigError

FRAME_RESIZE_RULES = ("area", "nearest", "cubic")
EVENT_DOWNSCALE_RULES = ("bin", "nearest_exact", "integrate_fire")
EVENT_DOWNSCALES = ("auto", *EVENT_DOWNSCALE_RULES)  # auto: what RVT's stored windows were made with, else bin
_RESIZE_FLAGS = {"area": "INTER_AREA", "nearest": "INTER_NEAREST", "cubic": "INTER_CUBIC"}


@dataclass(frozen=True)
class Geometry:
    """Keep the top `crop_height` rows of a (sensor_width, sensor_height) sensor, then divide by `scale`.

    Events: rows below the crop dropped, then `event_downscale`: "bin" counts every event in the input pixel
    covering it (x // scale, y // scale); "nearest_exact" counts only the events on the one sensor pixel of
    each block that torch's interpolate(mode="nearest-exact") samples (x % scale == scale // 2, same for y:
    the odd rows and columns at scale 2), i.e. the full-resolution histogram subsampled, as RVT halves
    1 Mpx (`event_representations_ds2_nearest`). Time bins normalised by the window's events
    (time_norm "events") then still come from all the window's events, as RVT's full-resolution ones.
    "integrate_fire": the recording's events were halved beforehand by integrate-and-fire over the whole
    stream (DAGr's rule, FlexEvent's `events_2x.h5`; stateful, so no window can do it alone): they arrive in
    input coordinates and only the rows below the crop are dropped.
    Frames: cropped, then resized to the input size with `frame_resize` (OpenCV area, nearest or bicubic).
    Boxes come back to sensor pixels by multiplying by `scale` (the crop keeps the top rows: no offset).
    """

    sensor_width: int
    sensor_height: int
    crop_height: int | None = None
    scale: int = 1
    frame_resize: str = "area"
    event_downscale: str = "bin"

    def __post_init__(self) -> None:
        for name in ("sensor_width", "sensor_height", "scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ConfigError(f"geometry.{name} must be a positive whole number, got {value!r}")
        if self.crop_height is not None and not 1 <= int(self.crop_height):
            raise ConfigError(f"geometry.crop_height must be >= 1, got {self.crop_height}")
        if self.frame_resize not in FRAME_RESIZE_RULES:
            raise ConfigError(f"geometry.frame_resize must be one of {FRAME_RESIZE_RULES}, got {self.frame_resize!r}")
        if self.event_downscale not in EVENT_DOWNSCALE_RULES:
            raise ConfigError(f"geometry.event_downscale must be one of {EVENT_DOWNSCALE_RULES}, got "
                              f"{self.event_downscale!r}")
        if self.size[0] < 1 or self.size[1] < 1:
            raise ConfigError(f"geometry: scale {self.scale} leaves no pixel of a {self.sensor_width}x"
                              f"{self.kept_height} sensor")

    @property
    def kept_height(self) -> int:
        """Sensor rows kept by the crop."""
        return self.sensor_height if self.crop_height is None else min(self.sensor_height, int(self.crop_height))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self.sensor_width // self.scale, self.kept_height // self.scale

    @property
    def is_identity(self) -> bool:
        return self.scale == 1 and self.kept_height == self.sensor_height

    @property
    def samples_events(self) -> bool:
        """Whether the downscale leaves out events inside the kept sensor ("nearest_exact" at scale > 1)."""
        return self.event_downscale == "nearest_exact" and self.scale > 1

    def cropped(self, events: np.ndarray) -> np.ndarray:
        """The events of the kept sensor rows, in sensor coordinates."""
        return events if self.kept_height == self.sensor_height else events[events["y"] < self.kept_height]

    def events(self, events: np.ndarray) -> np.ndarray:
        """Events in input coordinates: rows below the crop dropped, the `event_downscale` rule applied (x and y
        divided by `scale`), events falling past the last whole input pixel dropped."""
        if self.is_identity:
            return events
        width, height = self.size
        if self.event_downscale == "integrate_fire":
            return events[(events["x"] < width) & (events["y"] < height)]
        out = self.cropped(events)
        if self.samples_events:
            centre = self.scale // 2
            out = out[(out["x"] % self.scale == centre) & (out["y"] % self.scale == centre)]
        else:
            out = out.copy()
        out["x"] //= self.scale
        out["y"] //= self.scale
        return out[(out["x"] < width) & (out["y"] < height)]

    def frame(self, image: np.ndarray) -> np.ndarray:
        """An HxWx3 sensor-aligned RGB image cropped and resized to the input size."""
        import cv2

        cropped = image[:self.kept_height]
        width, height = self.size
        if cropped.shape[1] == width and cropped.shape[0] == height:
            return np.ascontiguousarray(cropped)
        return cv2.resize(cropped, (width, height), interpolation=getattr(cv2, _RESIZE_FLAGS[self.frame_resize]))

    def boxes_to_sensor(self, xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy input pixels -> sensor pixels."""
        return np.asarray(xyxy, np.float32) * np.float32(self.scale)


@dataclass(frozen=True)
class CameraFit:
    """A camera of another size run through a model trained on (sensor_width, sensor_height): letterboxing.

    Coordinates are scaled by the exact ratio s = min(sensor_width / camera_width, sensor_height /
    camera_height) (x' = floor(x * s), nearest binning as the geometry's own downscale), kept at the top-left;
    the rest of the model's sensor stays empty. The aspect ratio is kept, so objects keep their shape. Frames
    are resized by the same ratio (area) and padded with black; boxes come back divided by s.
    """

    camera_width: int
    camera_height: int
    sensor_width: int
    sensor_height: int

    @property
    def ratio(self) -> Fraction:
        return min(Fraction(self.sensor_width, self.camera_width), Fraction(self.sensor_height, self.camera_height))

    @property
    def fitted_size(self) -> tuple[int, int]:
        """(width, height) the camera covers on the model's sensor."""
        return (self.camera_width * self.ratio.numerator // self.ratio.denominator,
                self.camera_height * self.ratio.numerator // self.ratio.denominator)

    def describe(self) -> str:
        width, height = self.fitted_size
        return (f"camera {self.camera_width}x{self.camera_height} fitted to the model's {self.sensor_width}x"
                f"{self.sensor_height} sensor: scaled by {float(self.ratio):.4g} to {width}x{height}, top-left")

    def events(self, events: np.ndarray) -> np.ndarray:
        """Camera events in the model's sensor pixels (events outside the camera are refused downstream)."""
        num, den = self.ratio.numerator, self.ratio.denominator
        out = events.copy()
        out["x"] = (events["x"].astype(np.int64) * num) // den
        out["y"] = (events["y"].astype(np.int64) * num) // den
        return out

    def frame(self, image: np.ndarray) -> np.ndarray:
        """A camera RGB image letterboxed onto a black image of the model's sensor size."""
        import cv2

        width, height = self.fitted_size
        out = np.zeros((self.sensor_height, self.sensor_width, 3), np.uint8)
        out[:height, :width] = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return out

    def boxes_to_camera(self, xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy model-sensor pixels -> camera pixels."""
        return (np.asarray(xyxy, np.float64) / float(self.ratio)).astype(np.float32)


def check_event_downscale(value: str) -> str:
    """`value` if it names an event downscale rule (or "auto"), else a ConfigError naming data.event_downscale."""
    if value not in EVENT_DOWNSCALES:
        raise ConfigError(f"data.event_downscale must be one of {EVENT_DOWNSCALES}, got {value!r}")
    return value
