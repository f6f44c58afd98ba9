"""The Recording every reader returns: sensor size, time span, windowed reads, frames and labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flexdet.data.readers.guard import check_sensor_side, reading
from flexdet.errors import FlexdetError, FormatError, SensorSizeError


class Recording:
    """One event recording on disk. Subclasses implement `_read` (and frames/labels where they exist).

    Times are int64 µs in the recording's own clock; `t_end` is the last event time + 1, so
    `read(rec.t_start, rec.t_end)` returns every event. Backward timestamps are replaced by the running
    maximum in every read (full or windowed alike); `time_corrections` counts them.
    """

    format: str = ""
    t_offset: int = 0  # the origin the file's times are stored from (DSEC: /t_offset); 0 where a format has none

    def __init__(self, path: Path, width: int | None, height: int | None,
                 size_source: str) -> None:
        self.path = Path(path)
        self._width = check_sensor_side(path, "width", width, size_source)
        self._height = check_sensor_side(path, "height", height, size_source)
        self.size_source = size_source if width is not None and height is not None else "unknown"
        self.t_start = 0
        self.t_end = 0
        self.num_events: int | None = 0
        self.time_corrections = 0
        self.coordinate_extent: tuple[int, int] | None = None

    @property
    def sensor_size_known(self) -> bool:
        """Whether width and height are known (from the file, a known-camera table or an override)."""
        return self._width is not None and self._height is not None

    @property
    def width(self) -> int:
        """Sensor width in pixels; SensorSizeError when the file does not say and no override was given."""
        if self._width is None:
            raise SensorSizeError(f"{self.path}: the file does not state its sensor size; pass width= and "
                                  f"height= (or --width/--height)")
        return self._width

    @property
    def height(self) -> int:
        """Sensor height in pixels; SensorSizeError when unknown (see `width`)."""
        if self._height is None:
            raise SensorSizeError(f"{self.path}: the file does not state its sensor size; pass width= and "
                                  f"height= (or --width/--height)")
        return self._height

    def read(self, t_start: int | None = None, t_end: int | None = None) -> np.ndarray:
        """EVENT_DTYPE events with t in [t_start, t_end) (None = open end), sorted by time."""
        if t_start is not None and t_end is not None and t_end <= t_start:
            from flexdet.data.events import empty_events
            return empty_events(0)
        with reading(self.path, f"cannot read events [{t_start}, {t_end})"):
            return self._read(t_start, t_end)

    def _read(self, t_start: int | None, t_end: int | None) -> np.ndarray:
        raise NotImplementedError

    @property
    def has_frames(self) -> bool:
        """Whether `frames()` yields images (DSEC distorted images, AEDAT4 frame streams)."""
        return False

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t µs, HxWx3 uint8 RGB image) in time order."""
        raise FlexdetError(f"{self.path}: this {self.format} recording has no frames")

    @property
    def has_labels(self) -> bool:
        """Whether a label file sits next to the recording."""
        return self._label_path() is not None

    def _label_path(self) -> Path | None:
        return None

    def labels(self) -> np.ndarray:
        """BOX_DTYPE boxes from the label file next to the recording, clipped to the sensor when known."""
        from flexdet.data.labels import read_boxes

        path = self._label_path()
        if path is None:
            raise FlexdetError(f"{self.path}: no label file next to this recording")
        if self.sensor_size_known:
            return read_boxes(path, self.width, self.height)
        return read_boxes(path)

    def close(self) -> None:
        """Release open files (the base class holds none)."""

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        size = f"{self._width}x{self._height}" if self.sensor_size_known else "unknown size"
        return (f"{type(self).__name__}({str(self.path)!r}, format={self.format!r}, {size}, "
                f"events={self.num_events}, t=[{self.t_start}, {self.t_end}))")


def check_coordinates(path: Path, x: np.ndarray, y: np.ndarray, width: int | None, height: int | None,
                      first_index: int = 0) -> None:
    """Raise FormatError naming the first event whose x or y falls outside the sensor."""
    for name, column, limit in (("x", x, width), ("y", y, height)):
        if limit is None or len(column) == 0:
            continue
        bad = np.flatnonzero(column >= limit)
        if len(bad):
            i = int(bad[0])
            raise FormatError(path, f"{name}={int(column[i])} outside the sensor ({name} must be < {limit})",
                              index=first_index + i)


def check_polarity(path: Path, p: np.ndarray, first_index: int = 0) -> None:
    """Raise FormatError naming the first event whose polarity is not 0 or 1."""
    bad = np.flatnonzero(p > 1)
    if len(bad):
        i = int(bad[0])
        raise FormatError(path, f"polarity {int(p[i])} is not 0 or 1", index=first_index + i)


def running_max_times(t: np.ndarray, start: int = -1) -> tuple[np.ndarray, int]:
    """Replace each backward step by the running maximum (seeded with `start`); return (times, count)."""
    fixed = np.maximum.accumulate(np.maximum(t.astype(np.int64), start)) if len(t) else t.astype(np.int64)
    return fixed, int(np.count_nonzero(fixed != t))
