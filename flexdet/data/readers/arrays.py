"""Recordings held in memory as one event array: plain npz / h5 files and AEDAT4 (decoded once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flexdet.data.events import EVENT_DTYPE, time_slice
from flexdet.data.readers.base import Recording, check_coordinates, check_polarity, running_max_times
from flexdet.errors import FormatError


class ArrayRecording(Recording):
    """Events already decoded into memory; windows are binary searches on the (monotonic) times."""

    def __init__(self, path: Path, fmt: str, events: np.ndarray, width: int | None, height: int | None,
                 size_source: str) -> None:
        super().__init__(path, width, height, size_source)
        self.format = fmt
        check_coordinates(self.path, events["x"], events["y"], self._width, self._height)
        self._events = events
        self.num_events = len(events)
        if len(events):
            self.t_start = int(events["t"][0])
            self.t_end = int(events["t"][-1]) + 1
            self.coordinate_extent = (int(events["x"].max()) + 1, int(events["y"].max()) + 1)
        else:
            self.coordinate_extent = (0, 0)

    def _read(self, t_start: int | None, t_end: int | None) -> np.ndarray:
        return time_slice(self._events, t_start, t_end).copy()


def events_from_columns(path: Path, t, x, y, p) -> tuple[np.ndarray, int]:
    """Validate four columns and pack them as EVENT_DTYPE with monotonic times; returns (events, fixes)."""
    columns = {"t": np.asarray(t), "x": np.asarray(x), "y": np.asarray(y), "p": np.asarray(p)}
    n = len(columns["t"]) if columns["t"].ndim == 1 else -1
    for name, column in columns.items():
        if column.ndim != 1 or len(column) != n:
            raise FormatError(path, f"column '{name}' has shape {column.shape}; t, x, y, p must be 1-D arrays "
                                    f"of one length")
        if column.dtype.kind not in "iub":
            raise FormatError(path, f"column '{name}' has dtype {column.dtype}; integers are expected")
    for name in ("x", "y"):
        column = columns[name]
        bad = np.flatnonzero((column < 0) | (column > np.iinfo(np.uint16).max))
        if len(bad):
            raise FormatError(path, f"{name}={int(column[bad[0]])} is not a valid pixel coordinate",
                              index=int(bad[0]))
    polarity = columns["p"]
    if polarity.dtype.kind == "i":
        polarity = np.where(polarity < 0, 0, polarity)
    check_polarity(path, polarity)
    if n and int(columns["t"].max()) >= np.iinfo(np.int64).max:
        raise FormatError(path, "timestamps exceed the int64 µs range (t_end = last + 1 must fit)",
                          index=int(np.argmax(columns["t"])))
    times, fixes = running_max_times(columns["t"])
    events = np.empty(n, dtype=EVENT_DTYPE)
    events["t"] = times
    events["x"] = columns["x"]
    events["y"] = columns["y"]
    events["p"] = polarity
    return events, fixes
