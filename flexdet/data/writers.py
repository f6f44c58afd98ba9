"""Writers for the event and label files flexdet reads: DSEC `events.h5`, Prophesee DAT, npz, label npy.

Every writer is atomic (see flexdet.atomic): a converted dataset never holds a half-written file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flexdet.atomic import atomic_path
from flexdet.data.boxes import BOX_DTYPE, FILE_BOX_DTYPE
from flexdet.data.events import check_events

DSEC_CHUNK = 1 << 16


def dsec_ms_to_idx(t_relative: np.ndarray) -> np.ndarray:
    """DSEC's index: entry ms is the index of the first event with t >= ms * 1000 (t relative, sorted)."""
    if len(t_relative) == 0:
        return np.zeros(1, dtype=np.uint64)
    n_ms = int(t_relative[-1]) // 1000 + 2
    edges = np.arange(n_ms, dtype=np.int64) * 1000
    return np.searchsorted(t_relative, edges, side="left").astype(np.uint64)


def write_dsec_h5(path: os.PathLike[str] | str, events: np.ndarray, t_offset: int | None = None,
                  width: int | None = None, height: int | None = None, compression: str = "zstd") -> None:
    """Write events in DSEC's `events.h5` layout: /events/{t,x,y,p}, /t_offset, /ms_to_idx.

    `t` is stored relative to `t_offset` as uint32 (DSEC's layout); `t_offset` defaults to the first
    event's time. Compression is Blosc+ZSTD like DSEC ("none" writes uncompressed). Events must be
    sorted by time.
    """
    with dsec_h5_writer(path, t_offset, width, height, compression, chunk=min(DSEC_CHUNK, max(1, len(events)))) \
            as writer:
        writer.append(events)


@contextlib.contextmanager
def dsec_h5_writer(path: os.PathLike[str] | str, t_offset: int | None = None, width: int | None = None,
                   height: int | None = None, compression: str = "zstd", chunk: int = DSEC_CHUNK
                   ) -> Iterator[DsecColumns]:
    """`write_dsec_h5` chunk by chunk: yields a `DsecColumns` whose `append` takes consecutive time-sorted event
    arrays; /t_offset and /ms_to_idx are written when the block ends, and the file appears under `path` only
    then (atomic: an error inside the block leaves no file)."""
    import h5py
    import hdf5plugin

    filters = {} if compression == "none" else dict(hdf5plugin.Blosc(cname=compression, clevel=5,
                                                                     shuffle=hdf5plugin.Blosc.SHUFFLE))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        group = f.create_group("events")
        for name, dtype in (("t", np.uint32), ("x", np.uint16), ("y", np.uint16), ("p", np.uint8)):
            group.create_dataset(name, shape=(0,), dtype=dtype, chunks=(int(chunk),), maxshape=(None,), **filters)
        if width is not None and height is not None:
            group.attrs["width"] = int(width)
            group.attrs["height"] = int(height)
        columns = DsecColumns(str(path), group, t_offset, width, height)
        yield columns
        f.create_dataset("t_offset", data=np.int64(columns.t_offset or 0))
        f.create_dataset("ms_to_idx", data=columns.ms_to_idx())


class DsecColumns:
    """The /events columns of a DSEC file being written (`dsec_h5_writer`): appended chunk by chunk, with the
    per-millisecond counts of `dsec_ms_to_idx` kept as they arrive."""

    def __init__(self, source: str, group, t_offset: int | None, width: int | None, height: int | None) -> None:
        self.source, self.group, self.width, self.height = source, group, width, height
        self.t_offset = None if t_offset is None else int(t_offset)
        self.num_events = 0
        self._last_t: int | None = None
        self._ms_counts = np.zeros(0, np.int64)  # events per millisecond of relative time

    def append(self, events: np.ndarray) -> None:
        """Add time-sorted events after those already written."""
        check_events(events, self.width, self.height, source=self.source)
        t = events["t"].astype(np.int64)
        if not len(t):
            return
        if np.any(np.diff(t) < 0) or (self._last_t is not None and t[0] < self._last_t):
            raise ValueError(f"{self.source}: events must be sorted by time before writing")
        if self.t_offset is None:
            self.t_offset = int(t[0])
        rel = t - self.t_offset
        if rel[0] < 0 or rel[-1] > np.iinfo(np.uint32).max:
            raise ValueError(f"{self.source}: times relative to t_offset={self.t_offset} do not fit DSEC's uint32 "
                             "field")
        end = self.num_events + len(t)
        for name, column in (("t", rel.astype(np.uint32)), ("x", events["x"].astype(np.uint16)),
                             ("y", events["y"].astype(np.uint16)), ("p", events["p"].astype(np.uint8))):
            self.group[name].resize((end,))
            self.group[name][self.num_events:end] = column
        ms = rel // 1000
        if int(ms[-1]) >= len(self._ms_counts):
            grown = np.zeros(max(int(ms[-1]) + 1, 2 * len(self._ms_counts)), np.int64)
            grown[:len(self._ms_counts)] = self._ms_counts
            self._ms_counts = grown
        first = int(ms[0])
        counts = np.bincount(ms - first)
        self._ms_counts[first:first + len(counts)] += counts
        self.num_events, self._last_t = end, int(t[-1])

    def ms_to_idx(self) -> np.ndarray:
        """`dsec_ms_to_idx` of everything appended: entry ms = number of events with relative t < ms * 1000."""
        if self._last_t is None:
            return np.zeros(1, dtype=np.uint64)
        last_ms = (self._last_t - self.t_offset) // 1000
        return np.concatenate(([0], np.cumsum(self._ms_counts[:last_ms + 1]))).astype(np.uint64)


def write_dat(path: os.PathLike[str] | str, events: np.ndarray, width: int, height: int,
              version: int = 2) -> None:
    """Write events as a Prophesee DAT file (Gen1 `*_td.dat`): '% ' header, then 8-byte CD records."""
    check_events(events, width, height, source=str(path))
    t = events["t"]
    if len(t) and (t.min() < 0 or t.max() > np.iinfo(np.uint32).max):
        raise ValueError(f"{path}: DAT stores timestamps as uint32 microseconds; times out of range")
    header = (f"% Version {version}\n% Height {int(height)}\n% Width {int(width)}\n"
              f"% end\n").encode("ascii")
    body = np.empty(len(events), dtype=[("t", "<u4"), ("data", "<u4")])
    body["t"] = t.astype(np.uint32)
    body["data"] = (events["x"].astype(np.uint32) | (events["y"].astype(np.uint32) << 14)
                    | (events["p"].astype(np.uint32) << 28))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(bytes([0, 8]))
            f.write(body.tobytes())


def write_npz(path: os.PathLike[str] | str, events: np.ndarray, width: int | None = None,
              height: int | None = None) -> None:
    """Write events as a plain npz with arrays t, x, y, p (and width/height when known)."""
    check_events(events, width, height, source=str(path))
    extra = {} if width is None or height is None else {"width": np.int64(width), "height": np.int64(height)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, t=events["t"], x=events["x"], y=events["y"], p=events["p"], **extra)


def write_boxes(path: os.PathLike[str] | str, boxes: np.ndarray) -> None:
    """Write labels as a DSEC-Det `tracks.npy` / Prophesee `_bbox.npy` structured array (t as uint64)."""
    if boxes.dtype != BOX_DTYPE:
        raise ValueError(f"{path}: write_boxes expects BOX_DTYPE rows, got {boxes.dtype}")
    if len(boxes) and boxes["t"].min() < 0:
        raise ValueError(f"{path}: label files store times as uint64; negative times cannot be written")
    out = boxes[np.argsort(boxes["t"], kind="stable")].astype(FILE_BOX_DTYPE)
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, out)
