"""Writers for the event and label files flexdet reads: DSEC `events.h5`, Prophesee DAT, npz, label npy.

Every writer is atomic (see flexdet.atomic): a converted dataset never holds a half-written file.
"""

from __future__ import annotations

import os
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
    import h5py
    import hdf5plugin

    check_events(events, width, height, source=str(path))
    t = events["t"].astype(np.int64)
    if len(t) and np.any(np.diff(t) < 0):
        raise ValueError(f"{path}: events must be sorted by time before writing")
    offset = int(t[0]) if t_offset is None and len(t) else int(t_offset or 0)
    rel = t - offset
    if len(rel) and (rel[0] < 0 or rel[-1] > np.iinfo(np.uint32).max):
        raise ValueError(f"{path}: times relative to t_offset={offset} do not fit DSEC's uint32 field")
    filters = {} if compression == "none" else dict(hdf5plugin.Blosc(cname=compression, clevel=5,
                                                                     shuffle=hdf5plugin.Blosc.SHUFFLE))
    chunks = (min(DSEC_CHUNK, max(1, len(t))),)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            group = f.create_group("events")
            for name, column in (("t", rel.astype(np.uint32)), ("x", events["x"].astype(np.uint16)),
                                 ("y", events["y"].astype(np.uint16)), ("p", events["p"].astype(np.uint8))):
                group.create_dataset(name, data=column, chunks=chunks, maxshape=(None,), **filters)
            if width is not None and height is not None:
                group.attrs["width"] = int(width)
                group.attrs["height"] = int(height)
            f.create_dataset("t_offset", data=np.int64(offset))
            f.create_dataset("ms_to_idx", data=dsec_ms_to_idx(rel))


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
