"""DSEC sequences: `events/left/events.h5` (Blosc+ZSTD columns, `t_offset`, `ms_to_idx`), the distorted
RGB images aligned with the event camera, and DSEC-Det's `tracks.npy` labels.

Windows are read through `ms_to_idx`, so only the needed slice of each column is decompressed. Times
returned are absolute (t + t_offset). DSEC files are written sorted: a window whose times go backwards
raises FormatError instead of being silently patched, since ms_to_idx would be wrong for it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numba import njit

from flexdet.data.events import EVENT_DTYPE, empty_events, time_slice
from flexdet.data.readers.base import Recording
from flexdet.errors import FormatError

DSEC_SIZE = (640, 480)
EVENTS_RELATIVE = Path("events") / "left" / "events.h5"
IMAGES_RELATIVE = Path("images") / "left" / "distorted"
TIMESTAMPS_RELATIVE = Path("images") / "timestamps.txt"
TRACKS_RELATIVE = Path("object_detections") / "left" / "tracks.npy"


def is_dsec_h5(handle) -> bool:
    """Whether an open h5py file has DSEC's layout (/events/t... and /ms_to_idx)."""
    return "events" in handle and "t" in handle["events"] and "ms_to_idx" in handle


class DsecRecording(Recording):
    """One DSEC event file, with its sequence folder's images and labels when it sits in one."""

    format = "dsec"

    def __init__(self, events_path: Path, width: int | None = None, height: int | None = None) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the Blosc/ZSTD filter 32001 before h5py opens files)

        events_path = Path(events_path)
        try:
            self._file = h5py.File(events_path, "r")
        except OSError as exc:
            raise FormatError(events_path, f"not a readable HDF5 file ({exc})") from None
        try:
            self._open(events_path, width, height)
        except FormatError:
            self._file.close()
            raise
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
            self._file.close()
            raise FormatError(events_path, f"not a DSEC events file ({exc})") from None

    def _open(self, events_path: Path, width: int | None, height: int | None) -> None:
        group = self._file["events"]
        self._columns = {}
        for name in ("t", "x", "y", "p"):
            if name not in group:
                raise FormatError(events_path, f"DSEC events file lacks /events/{name}")
            self._columns[name] = group[name]
        lengths = {name: ds.shape for name, ds in self._columns.items()}
        if len(set(lengths.values())) != 1 or len(lengths["t"]) != 1:
            raise FormatError(events_path, f"/events columns have shapes {lengths}; expected equal 1-D lengths")
        stored = (group.attrs.get("width", self._file.attrs.get("width")),
                  group.attrs.get("height", self._file.attrs.get("height")))
        if width is not None or height is not None:
            size, source = (width or stored[0] or DSEC_SIZE[0], height or stored[1] or DSEC_SIZE[1]), "override"
        elif stored[0] is not None and stored[1] is not None:
            size, source = (int(stored[0]), int(stored[1])), "file"
        else:
            size, source = DSEC_SIZE, "DSEC default"
        super().__init__(events_path, int(size[0]), int(size[1]), source)
        self.sequence_dir = _sequence_dir(events_path)
        n = int(lengths["t"][0])
        self.t_offset = int(self._file["t_offset"][()]) if "t_offset" in self._file else 0
        self.ms_to_idx = np.asarray(self._file["ms_to_idx"][()], dtype=np.int64).reshape(-1)
        if len(self.ms_to_idx) and (np.any(np.diff(self.ms_to_idx) < 0) or self.ms_to_idx[0] < 0
                                     or self.ms_to_idx[-1] > n):
            raise FormatError(events_path, "ms_to_idx is not a non-decreasing index into the events")
        self.num_events = n
        if n:
            t = self._columns["t"]
            self.t_start = int(t[0]) + self.t_offset
            self.t_end = int(t[n - 1]) + self.t_offset + 1

    def _slice_bounds(self, t_start: int | None, t_end: int | None) -> tuple[int, int]:
        n = self.num_events
        lo, hi = 0, n
        if t_start is not None:
            ms = max(0, (t_start - self.t_offset) // 1000)
            lo = int(self.ms_to_idx[ms]) if ms < len(self.ms_to_idx) else n
        if t_end is not None:
            ms = -((self.t_offset - t_end) // 1000)
            hi = n if ms >= len(self.ms_to_idx) else (0 if ms < 0 else int(self.ms_to_idx[ms]))
        return lo, max(lo, hi)

    def _read(self, t_start: int | None, t_end: int | None) -> np.ndarray:
        lo, hi = self._slice_bounds(t_start, t_end)
        if hi <= lo:
            return empty_events(0)
        try:
            t, x, y, p = (self._columns[k][lo:hi] for k in ("t", "x", "y", "p"))
        except (OSError, ValueError, RuntimeError) as exc:
            raise FormatError(self.path, f"cannot read events {lo}..{hi} ({exc})") from None
        events = np.empty(hi - lo, dtype=EVENT_DTYPE)
        problem, where = _pack_columns(t, x, y, p, self.t_offset, self._width, self._height, events)
        if problem:
            messages = {1: "event times go backwards", 2: "event outside the sensor "
                        f"({self._width}x{self._height})", 3: "polarity is not 0 or 1"}
            raise FormatError(self.path, messages[problem], index=lo + where)
        return time_slice(events, t_start, t_end)

    def _label_path(self) -> Path | None:
        if self.sequence_dir is None:
            return None
        path = self.sequence_dir / TRACKS_RELATIVE
        return path if path.is_file() else None

    @property
    def has_frames(self) -> bool:
        return (self.sequence_dir is not None and (self.sequence_dir / IMAGES_RELATIVE).is_dir()
                and (self.sequence_dir / TIMESTAMPS_RELATIVE).is_file())

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t µs, 480x640x3 RGB) for each distorted image, in the events' absolute clock."""
        import cv2

        if not self.has_frames:
            yield from super().frames()
            return
        stamps_path = self.sequence_dir / TIMESTAMPS_RELATIVE
        try:
            stamps = np.loadtxt(stamps_path, dtype=np.int64, ndmin=1)
        except ValueError as exc:
            raise FormatError(stamps_path, f"not a list of integer timestamps ({exc})") from None
        images = sorted((self.sequence_dir / IMAGES_RELATIVE).glob("*.png"))
        if len(images) != len(stamps):
            raise FormatError(stamps_path, f"{len(stamps)} timestamps for {len(images)} images in "
                                           f"{self.sequence_dir / IMAGES_RELATIVE}")
        for stamp, image_path in zip(stamps, images):
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if image is None:
                raise FormatError(image_path, "not a readable image")
            yield int(stamp), cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._file.close()


@njit(cache=True, nogil=True, boundscheck=False)
def _pack_columns(t, x, y, p, t_offset, width, height, out):
    """One pass that validates the DSEC columns and packs them as EVENT_DTYPE (absolute times).

    Returns (0, 0) or (problem, index): 1 time goes backwards, 2 coordinate outside, 3 bad polarity.
    """
    previous = np.int64(-1) << 62
    for i in range(len(t)):
        ti = np.int64(t[i]) + t_offset
        if ti < previous:
            return 1, i
        if x[i] >= width or y[i] >= height:
            return 2, i
        if p[i] > 1:
            return 3, i
        previous = ti
        out[i].t = ti
        out[i].x = x[i]
        out[i].y = y[i]
        out[i].p = p[i]
    return 0, 0


def _sequence_dir(events_path: Path) -> Path | None:
    """`<seq>` when the file is `<seq>/events/left/events.h5`, else None."""
    parts = events_path.resolve().parts
    if len(parts) >= 4 and tuple(parts[-3:]) == EVENTS_RELATIVE.parts:
        return Path(*parts[:-3])
    return None
