"""Plain event containers: npz with arrays t, x, y, p (flexdet's write_npz) and HDF5 files holding the
same columns at the top level or under /events (without DSEC's ms_to_idx). Read whole into memory."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from flexdet.data.readers.arrays import ArrayRecording, events_from_columns
from flexdet.data.readers.dsec import integer_dataset
from flexdet.data.readers.guard import reading
from flexdet.data.readers.npy import read_npy_header
from flexdet.errors import FormatError

_COLUMNS = ("t", "x", "y", "p")
# Deflate expands at most ~1032:1; a member claiming more than this would only allocate for data not there.
_MAX_DEFLATE_RATIO = 1100


def _sensor_size(stored: tuple, width: int | None, height: int | None) -> tuple:
    """(width, height, source): the override wins, then what the file stores, else unknown."""
    if width is not None or height is not None:
        return (width if width is not None else stored[0], height if height is not None else stored[1],
                "override")
    if stored[0] is not None and stored[1] is not None:
        return stored[0], stored[1], "file"
    return None, None, "unknown"


def open_npz(path: Path, width: int | None = None, height: int | None = None) -> ArrayRecording:
    """Open an npz holding t, x, y, p (and optionally width, height)."""
    with reading(path, "not a readable npz file"):
        _check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _COLUMNS if k not in data.files]
            if missing:
                raise FormatError(path, f"npz lacks array(s) {missing} (needs t, x, y, p)")
            columns = [data[k] for k in _COLUMNS]
            stored = tuple(_scalar(path, data[k], k) if k in data.files else None for k in ("width", "height"))
    events, fixes = events_from_columns(path, *columns)
    w, h, source = _sensor_size(stored, width, height)
    recording = ArrayRecording(path, "npz", events, w, h, source)
    recording.time_corrections = fixes
    return recording


def open_h5(path: Path, width: int | None = None, height: int | None = None) -> ArrayRecording:
    """Open an HDF5 file with t, x, y, p datasets at the top level or under /events."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers Blosc/ZSTD before h5py opens the file)

    with reading(path, "not a readable HDF5 event file"), h5py.File(path, "r") as f:
        group = f["events"] if "events" in f and isinstance(f["events"], h5py.Group) else f
        missing = [k for k in _COLUMNS if k not in group]
        if missing:
            raise FormatError(path, f"HDF5 file lacks dataset(s) {missing} (top level or under /events)")
        columns = [integer_dataset(path, group[k], k)[()] for k in _COLUMNS]
        stored = tuple(_attr(path, group, f, k) for k in ("width", "height"))
    events, fixes = events_from_columns(path, *columns)
    w, h, source = _sensor_size(stored, width, height)
    recording = ArrayRecording(path, "h5", events, w, h, source)
    recording.time_corrections = fixes
    return recording


def _attr(path: Path, group, root, key: str) -> int | None:
    for holder in (group, root):
        if key in holder.attrs:
            return _scalar(path, np.asarray(holder.attrs[key]), key)
    return None


def _scalar(path: Path, value: np.ndarray, key: str) -> int:
    if value.size != 1 or value.dtype.kind not in "iu" or int(value.reshape(-1)[0]) <= 0:
        raise FormatError(path, f"'{key}' must be one positive integer, got {value!r}")
    return int(value.reshape(-1)[0])


def _check_npz_sizes(path: Path) -> None:
    """Refuse an npz whose members declare more data than the archive can hold, before numpy allocates it.

    Checks each member's extent against the file, its uncompressed size against its compressed size
    (stored: equal; deflate: at most ~1032x), and each .npy header's shape x dtype against that size.
    """
    file_size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.header_offset + info.compress_size > file_size:
                raise FormatError(path, f"member {info.filename!r} extends past the end of the file",
                                  offset=info.header_offset)
            if info.compress_type == zipfile.ZIP_STORED:
                plausible = info.file_size == info.compress_size
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                plausible = info.file_size <= info.compress_size * _MAX_DEFLATE_RATIO + 1024
            else:
                raise FormatError(path, f"member {info.filename!r} uses zip compression {info.compress_type}; "
                                        f"numpy writes stored or deflated members", offset=info.header_offset)
            if not plausible:
                raise FormatError(path, f"member {info.filename!r} declares {info.file_size} bytes from "
                                        f"{info.compress_size} compressed bytes", offset=info.header_offset)
            if info.filename.endswith(".npy"):  # versions 1.0 to 3.0, as np.load reads them
                with archive.open(info) as member:
                    read_npy_header(path, member, info.file_size, versions=((1, 0), (2, 0), (3, 0)),
                                    member=info.filename, at=info.header_offset)
