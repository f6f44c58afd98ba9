"""The model's input frame: a protocol's crop and downscale applied to events, RGB frames and boxes alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexdet.training.protocols import Protocol


@dataclass(frozen=True)
class Geometry:
    """Keep the top `crop_height` rows of a (sensor_width, sensor_height) sensor, then divide by `scale`."""

    sensor_width: int
    sensor_height: int
    crop_height: int
    scale: int

    @classmethod
    def from_protocol(cls, protocol: Protocol) -> Geometry:
        """The geometry a protocol evaluates in (its eval_size is this geometry's size)."""
        width, height = protocol.sensor_size
        crop = min(height, protocol.crop_height) if protocol.crop_height is not None else height
        return cls(int(width), int(height), int(crop), int(protocol.scale))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self.sensor_width // self.scale, self.crop_height // self.scale

    def events(self, events: np.ndarray) -> np.ndarray:
        """Events in input coordinates: rows below the crop dropped, x and y divided by `scale` (nearest
        binning, as RVT's `ds2_nearest`), events falling past the last whole input pixel dropped."""
        if self.scale == 1 and self.crop_height == self.sensor_height:
            return events
        width, height = self.size
        out = events[events["y"] < self.crop_height].copy()
        out["x"] //= self.scale
        out["y"] //= self.scale
        return out[(out["x"] < width) & (out["y"] < height)]

    def frame(self, image: np.ndarray) -> np.ndarray:
        """An HxWx3 sensor-aligned RGB image cropped and resized (area interpolation) to the input size."""
        import cv2

        cropped = image[:self.crop_height]
        width, height = self.size
        if cropped.shape[1] == width and cropped.shape[0] == height:
            return np.ascontiguousarray(cropped)
        return cv2.resize(cropped, (width, height), interpolation=cv2.INTER_AREA)
