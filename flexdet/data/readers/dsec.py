"""DSEC sequences: `events/left/events.h5` (Blosc+ZSTD columns, `t_offset`, `ms_to_idx`), the distorted
RGB images aligned with the event camera, and DSEC-Det's `tracks.npy` labels.

Windows are read through `ms_to_idx`, so only the needed slice of each column is decompressed; each
window is checked against the times just outside it, and an index that fails (short, stale, damaged) is
replaced by a search of the times themselves. Columns of any integer dtype are range-checked. Times
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
from flexdet.data.readers.guard import reading
from flexdet.errors import FormatError

DSEC_SIZE = (640, 480)
EVENTS_RELATIVE = Path("events") / "left" / "events.h5"
IMAGES_RELATIVE = Path("images") / "left" / "distorted"
TIMESTAMPS_RELATIVE = Path("images") / "timestamps.txt"
TRACKS_RELATIVE = Path("object_detections") / "left" / "tracks.npy"
_INT64_MAX = np.iinfo(np.int64).max
_INDEX_SLACK_MS = 1000  # ms_to_idx entries past the last event a writer may add (beyond: not trusted)


def is_dsec_h5(handle) -> bool:
    """Whether an open h5py file has DSEC's layout (/events/t... and /ms_to_idx)."""
    return "events" in handle and "t" in handle["events"] and "ms_to_idx" in handle


class DsecRecording(Recording):
    """One DSEC event file, with its sequence folder's images and labels when it sits in one."""

    format = "dsec"
    index_rebuilt = False  # True once ms_to_idx failed a check and windows are searched in /events/t instead
    _times: np.ndarray | None = None  # relative times, loaded when ms_to_idx cannot be trusted

    def __init__(self, events_path: Path, width: int | None = None, height: int | None = None) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers the Blosc/ZSTD filter 32001 before h5py opens files)

        events_path = Path(events_path)
        with reading(events_path, "not a readable HDF5 file"):
            self._file = h5py.File(events_path, "r")
        try:
            with reading(events_path, "not a DSEC events file"):
                self._open(events_path, width, height)
        except BaseException:
            self._file.close()
            raise

    def _open(self, events_path: Path, width: int | None, height: int | None) -> None:
        group = self._file["events"]
        self._columns = {}
        for name in ("t", "x", "y", "p"):
            if name not in group:
                raise FormatError(events_path, f"DSEC events file lacks /events/{name}")
            self._columns[name] = integer_dataset(events_path, group[name], f"/events/{name}")
        lengths = {name: ds.shape for name, ds in self._columns.items()}
        if len(set(lengths.values())) != 1 or len(lengths["t"]) != 1:
            raise FormatError(events_path, f"/events columns have shapes {lengths}; expected equal 1-D lengths")
        stored = (group.attrs.get("width", self._file.attrs.get("width")),
                  group.attrs.get("height", self._file.attrs.get("height")))
        if width is not None or height is not None:
            size = (width if width is not None else stored[0] if stored[0] is not None else DSEC_SIZE[0],
                    height if height is not None else stored[1] if stored[1] is not None else DSEC_SIZE[1])
            source = "override"
        elif stored[0] is not None and stored[1] is not None:
            size, source = stored, "file"
        else:
            size, source = DSEC_SIZE, "DSEC default"
        super().__init__(events_path, size[0], size[1], source)
        self.sequence_dir = _sequence_dir(events_path)
        n = int(lengths["t"][0])
        self.t_offset = _t_offset(events_path, self._file)
        # The last time an event may carry: absolute times and t_end = last + 1 must fit int64.
        self._t_limit = _INT64_MAX - 1 - max(self.t_offset, 0)
        self.num_events = n
        if n:
            t = self._columns["t"]
            first, last = int(t[0]), int(t[n - 1])
            for index, value in ((0, first), (n - 1, last)):
                if not 0 <= value <= self._t_limit:
                    raise FormatError(events_path, f"event time {value} (+ t_offset {self.t_offset}) is outside "
                                                   f"the int64 microsecond range", index=index)
            self.t_start = first + self.t_offset
            self.t_end = last + self.t_offset + 1
        self.ms_to_idx = self._load_index(events_path, n)

    def _load_index(self, events_path: Path, n: int) -> np.ndarray:
        """ms_to_idx if it is plausible for the events (length, order, range); else the times are loaded and
        searched instead. Reads still check every window against the times around it (`_read`)."""
        if "ms_to_idx" not in self._file:
            raise FormatError(events_path, "DSEC events file lacks /ms_to_idx")
        stored = integer_dataset(events_path, self._file["ms_to_idx"], "/ms_to_idx")
        span_ms = (self.t_end - 1 - self.t_offset) // 1000 if n else 0
        if stored.ndim != 1 or stored.shape[0] > span_ms + span_ms // 100 + _INDEX_SLACK_MS:
            return self._rebuilt_index()
        index = np.asarray(stored[()]).astype(np.int64, copy=False).reshape(-1)
        if len(index) and (index[0] < 0 or index[-1] > n or np.any(np.diff(index) < 0)):
            return self._rebuilt_index()
        return index

    def _rebuilt_index(self) -> np.ndarray:
        """Load and check every relative time, to search windows in them from now on (the full check after a
        stored index failed one); returns an empty ms_to_idx. Memory: 8 bytes per stored event."""
        t = np.asarray(self._columns["t"][()]).astype(np.int64)
        problem = _check_times(t, self._t_limit)
        if problem >= 0:
            raise FormatError(self.path, "event times go backwards or leave the int64 range", index=problem)
        self.index_rebuilt = True
        self._times = t
        return np.zeros(0, np.int64)

    def _slice_bounds(self, t_start: int | None, t_end: int | None) -> tuple[int, int]:
        n = self.num_events
        lo, hi = 0, n
        if self._times is not None:
            if t_start is not None:
                lo = _search(self._times, t_start - self.t_offset)
            if t_end is not None:
                hi = _search(self._times, t_end - self.t_offset)
            return lo, max(lo, hi)
        if t_start is not None:
            ms = max(0, (t_start - self.t_offset) // 1000)
            lo = int(self.ms_to_idx[ms]) if ms < len(self.ms_to_idx) else n
        if t_end is not None:
            ms = -((self.t_offset - t_end) // 1000)
            hi = n if ms >= len(self.ms_to_idx) else (0 if ms < 0 else int(self.ms_to_idx[ms]))
        return lo, max(lo, hi)

    def _covering_times(self, t_start: int | None, t_end: int | None) -> tuple[int, int, int, np.ndarray]:
        """(lo, hi, a, relative t[a:b]) where [lo, hi) holds every event of the window, checked against the times just
        outside it (the spot check of ms_to_idx); a failed check rebuilds the index from the times once."""
        n = self.num_events
        for attempt in range(2):
            lo, hi = self._slice_bounds(t_start, t_end)
            a, b = max(lo - 1, 0), min(hi + 1, n)
            times = np.asarray(self._columns["t"][a:b]).astype(np.int64, copy=False)
            before_ok = lo == 0 or t_start is None or int(times[0]) + self.t_offset < t_start
            after_ok = hi == n or t_end is None or int(times[-1]) + self.t_offset >= t_end
            if (before_ok and after_ok) or attempt:
                break
            self.ms_to_idx = self._rebuilt_index()
        if not (before_ok and after_ok):
            raise FormatError(self.path, f"events {lo}..{hi} do not cover [{t_start}, {t_end}) although the "
                                         f"times are sorted", index=lo)
        return lo, hi, a, times

    def _read(self, t_start: int | None, t_end: int | None) -> np.ndarray:
        lo, hi, a, times = self._covering_times(t_start, t_end)
        if hi <= lo:
            return empty_events(0)
        t = times[lo - a:hi - a]
        x, y, p = (_native(self._columns[k][lo:hi]) for k in ("x", "y", "p"))
        events = np.empty(hi - lo, dtype=EVENT_DTYPE)
        problem, where = _pack_columns(t, x, y, p, self.t_offset, self._t_limit, self._width, self._height,
                                       events)
        if problem:
            messages = {1: "event times go backwards", 2: "event outside the sensor "
                        f"({self._width}x{self._height})", 3: "polarity is not 0 or 1",
                        4: "event time outside the int64 microsecond range"}
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


def integer_dataset(path: Path, dataset, name: str):
    """`dataset` if it holds integers and the file really stores the values it declares (a few-KB file may
    declare 2**40 elements; reading those would allocate for data that is not there)."""
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise FormatError(path, f"{name} is not a dataset")
    if dataset.dtype.kind not in "iub":
        raise FormatError(path, f"{name} has dtype {dataset.dtype}; integers are expected")
    layout = dataset.id.get_create_plist().get_layout()
    if layout == h5py.h5d.CONTIGUOUS and dataset.size:
        stored = dataset.id.get_storage_size()
        offset = dataset.id.get_offset()
        if stored < dataset.nbytes or offset is None or offset + dataset.nbytes > path.stat().st_size:
            raise FormatError(path, f"{name} declares {dataset.size} values ({dataset.nbytes} bytes) that the "
                                    f"file does not hold")
    elif layout == h5py.h5d.CHUNKED and dataset.size:
        expected = int(np.prod([-(-s // c) for s, c in zip(dataset.shape, dataset.chunks)]))
        if dataset.id.get_num_chunks() != expected:
            raise FormatError(path, f"{name} declares {dataset.size} values in {expected} chunks but the file "
                                    f"holds {dataset.id.get_num_chunks()} chunks")
    return dataset


def _t_offset(path: Path, handle) -> int:
    if "t_offset" not in handle:
        return 0
    value = np.asarray(integer_dataset(path, handle["t_offset"], "/t_offset")[()])
    if value.size != 1:
        raise FormatError(path, f"/t_offset holds {value.size} values; expected one integer")
    offset = int(value.reshape(-1)[0])
    if not -_INT64_MAX <= offset <= _INT64_MAX:
        raise FormatError(path, f"/t_offset {offset} is outside the int64 range")
    return offset


def _search(times: np.ndarray, value: int) -> int:
    """First index with times[i] >= value, for any Python int `value`."""
    if value <= 0:
        return 0
    if not len(times) or value > int(times[-1]):
        return len(times)
    return int(np.searchsorted(times, value, side="left"))


def _native(column: np.ndarray) -> np.ndarray:
    """The column in native byte order and with bool as uint8 (what the packing kernel accepts)."""
    column = np.asarray(column)
    if column.dtype == np.bool_:
        return column.view(np.uint8)
    return column if column.dtype.isnative else column.astype(column.dtype.newbyteorder("="))


@njit(cache=True, nogil=True, boundscheck=False)
def _check_times(t, limit):
    """Index of the first relative time that is negative, beyond `limit` or earlier than its predecessor; -1."""
    previous = np.int64(0)
    for i in range(len(t)):
        if t[i] < previous or t[i] > limit:
            return i
        previous = t[i]
    return -1


@njit(cache=True, nogil=True, boundscheck=False)
def _pack_columns(t, x, y, p, t_offset, t_limit, width, height, out):
    """One pass that validates the DSEC columns (relative int64 times) and packs them as EVENT_DTYPE with
    absolute times.

    Returns (0, 0) or (problem, index): 1 time goes backwards, 2 coordinate outside (negative values of
    signed columns included), 3 bad polarity, 4 relative time outside [0, t_limit].
    """
    previous = np.int64(0)
    for i in range(len(t)):
        ri = t[i]
        if ri < 0 or ri > t_limit:
            return 4, i
        if ri < previous:
            return 1, i
        ti = ri + t_offset
        if x[i] < 0 or x[i] >= width or y[i] < 0 or y[i] >= height:
            return 2, i
        if p[i] < 0 or p[i] > 1:
            return 3, i
        previous = ri
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
