"""Read every event format flexdet knows into EVENT_DTYPE: `open_recording` and `read_events`.

Formats: Prophesee DAT and RAW (EVT 2.0 / 3.0), DSEC `events.h5` (file or sequence folder), RVT
preprocessed sequences (histograms only), AEDAT4, plain npz / h5 with t, x, y, p. Word-stream formats
take keyword options `chunk_bytes`, `index_step_us` and `cache_index` (see sequential.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from flexdet.data.readers.base import Recording
from flexdet.data.readers.guard import reading
from flexdet.errors import FormatError, UnsupportedFormatError

__all__ = ["Recording", "open_recording", "read_events"]

_SUFFIXES = {".dat": "dat", ".raw": "raw", ".h5": "h5", ".hdf5": "h5", ".hdf": "h5", ".npz": "npz",
             ".aedat4": "aedat4"}


def open_recording(path: os.PathLike[str] | str, width: int | None = None, height: int | None = None,
                   **options) -> Recording:
    """Open a recording (file, DSEC or RVT sequence folder); `width`/`height` override the file's size."""
    path = Path(path)
    if not path.exists():
        raise FormatError(path, "no such file or directory")
    with reading(path, "not a readable event file"):
        if path.is_dir():
            return _open_directory(path, width, height, options)
        return _open_file(path, width, height, options)


def _open_file(path: Path, width: int | None, height: int | None, options: dict) -> Recording:
    if path.stat().st_size == 0:
        raise FormatError(path, "empty file")
    kind = _SUFFIXES.get(path.suffix.lower()) or _sniff(path)
    if kind == "dat":
        from flexdet.data.readers.dat import open_dat
        return open_dat(path, width, height, **options)
    if kind == "raw":
        from flexdet.data.readers.raw import open_raw
        return open_raw(path, width, height, **options)
    if kind == "h5":
        return _open_h5(path, width, height)
    if kind == "npz":
        from flexdet.data.readers.plain import open_npz
        return open_npz(path, width, height)
    from flexdet.data.readers.aedat4 import Aedat4Recording
    return Aedat4Recording(path, width, height)


def read_events(path: os.PathLike[str] | str, t_start: int | None = None, t_end: int | None = None,
                **options) -> np.ndarray:
    """EVENT_DTYPE events of `path` with t in [t_start, t_end), sorted; options go to open_recording."""
    with open_recording(path, **options) as recording:
        return recording.read(t_start, t_end)


def _open_directory(path: Path, width: int | None, height: int | None, options: dict) -> Recording:
    from flexdet.data.readers.dsec import EVENTS_RELATIVE, DsecRecording
    from flexdet.data.readers.rvt import RvtSequence, is_rvt_sequence

    if (path / EVENTS_RELATIVE).is_file():
        return DsecRecording(path / EVENTS_RELATIVE, width, height)
    if is_rvt_sequence(path):
        return RvtSequence(path, width, height)
    raise UnsupportedFormatError(f"{path}: directory is neither a DSEC sequence (events/left/events.h5) nor "
                                 f"an RVT sequence (event_representations_v2/)")


def _open_h5(path: Path, width: int | None, height: int | None) -> Recording:
    import h5py
    import hdf5plugin  # noqa: F401  (registers Blosc/ZSTD before h5py opens the file)

    from flexdet.data.readers.dsec import DsecRecording, is_dsec_h5
    from flexdet.data.readers.plain import open_h5

    with reading(path, "not a readable HDF5 file"), h5py.File(path, "r") as handle:
        dsec = is_dsec_h5(handle)
    return DsecRecording(path, width, height) if dsec else open_h5(path, width, height)


def _sniff(path: Path) -> str:
    """Guess the format of a file without a known suffix from its first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"\x89HDF"):
        return "h5"
    if head.startswith(b"PK"):
        return "npz"
    if head.startswith(b"#!AER-DAT4"):
        return "aedat4"
    if head.startswith(b"%") and (b"% evt " in head or b"% format EVT" in head):
        return "raw"
    if head.startswith(b"% "):
        return "dat"
    raise UnsupportedFormatError(f"{path}: unknown event file format (suffix '{path.suffix}'); flexdet reads "
                                 f".dat, .raw, .h5, .npz, .aedat4 and DSEC / RVT sequence folders")
