"""RVT preprocessed sequences (`<split>/<sequence>/`): stacked event histograms and labels, no raw events.

Layout: `event_representations_v2/stacked_histogram_dt=<ms>_nbins=<n>/event_representations*.h5`
(dataset 'data', (N, 2*nbins, H, W) uint8), `timestamps_us.npy` (END time of each window),
`objframe_idx_2_repr_idx.npy`; labels in `labels_v2/labels.npz`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexdet.data.readers.base import Recording
from flexdet.data.readers.npy import load_npy
from flexdet.errors import FlexdetError, FormatError

REPRESENTATIONS_DIR = "event_representations_v2"
LABELS_RELATIVE = Path("labels_v2") / "labels.npz"
# How RVT makes windows at a fraction of the sensor (its 1 Mpx `ds2_nearest`: the full-resolution histogram halved
# by nearest-exact interpolation), as the geometry's event_downscale: its stored windows and its models' inputs.
DOWNSCALE_RULE = "nearest_exact"


def is_rvt_sequence(path: Path) -> bool:
    """Whether `path` is an RVT sequence folder."""
    return (path / REPRESENTATIONS_DIR).is_dir()


class RvtSequence(Recording):
    """One RVT sequence: `histograms(start, stop)`, `window_end_times`, `labels()`; `read()` raises."""

    format = "rvt"

    def __init__(self, sequence_dir: Path, width: int | None = None, height: int | None = None) -> None:
        import h5py
        import hdf5plugin  # noqa: F401  (registers Blosc/ZSTD before h5py opens the file)

        sequence_dir = Path(sequence_dir)
        representation = _representation_dir(sequence_dir)
        files = sorted(representation.glob("event_representations*.h5"))
        if not files:
            raise FormatError(representation, "no event_representations*.h5 in this RVT folder")
        try:
            self._file = h5py.File(files[0], "r")
            self._data = self._file["data"]
        except (OSError, KeyError) as exc:
            raise FormatError(files[0], f"not an RVT representation file ({exc})") from None
        if self._data.ndim != 4:
            shape = self._data.shape  # read before the file closes
            self._file.close()
            raise FormatError(files[0], f"'data' has shape {shape}; expected (N, C, H, W)")
        stored_h, stored_w = int(self._data.shape[2]), int(self._data.shape[3])
        overridden = width is not None or height is not None
        super().__init__(sequence_dir, width if width is not None else stored_w,
                         height if height is not None else stored_h, "override" if overridden else "file")
        try:
            index = read_window_index(sequence_dir, representation)
        except FormatError:
            self._file.close()
            raise
        if len(index.ends) != self._data.shape[0]:
            self._file.close()
            raise FormatError(representation, f"{len(index.ends)} window times for {self._data.shape[0]} histograms")
        self.window_end_times = index.ends
        self.window_us = index.window_us
        self.representation_file = files[0]
        self.num_events = None
        if len(self.window_end_times):
            self.t_start = int(self.window_end_times[0]) - self.window_us
            self.t_end = int(self.window_end_times[-1])

    @property
    def num_windows(self) -> int:
        """Number of stacked histograms."""
        return int(self._data.shape[0])

    def histograms(self, start: int, stop: int) -> np.ndarray:
        """Histograms [start, stop) as a (stop - start, C, H, W) uint8 array."""
        return np.asarray(self._data[start:stop])

    def read(self, t_start: int | None = None, t_end: int | None = None) -> np.ndarray:
        """Always raises: the raw events were discarded when RVT preprocessed this sequence."""
        raise FlexdetError(f"{self.path}: RVT preprocessed data has no raw events, only stacked histograms "
                           f"(use histograms(start, stop))")

    def _label_path(self) -> Path | None:
        path = self.path / LABELS_RELATIVE
        return path if path.is_file() else None

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class WindowIndex:
    """What RVT stored besides the histograms: each window's END time, the window length, and for each label
    frame (labels_v2 order) the window it is scored on (`objframe_idx_2_repr_idx`)."""

    ends: np.ndarray
    window_us: int
    label_windows: np.ndarray


def read_window_index(sequence_dir: Path, representation: Path | None = None) -> WindowIndex:
    """The window index of an RVT sequence folder, without opening its histograms."""
    representation = representation or _representation_dir(Path(sequence_dir))
    arrays = []
    for name in ("timestamps_us.npy", "objframe_idx_2_repr_idx.npy"):
        array = load_npy(representation / name)
        if array.dtype.kind not in "iu":
            raise FormatError(representation / name, f"expected integers, got {array.dtype}")
        arrays.append(array.astype(np.int64).reshape(-1))
    ends, label_windows = arrays
    if np.any(np.diff(ends) <= 0):
        raise FormatError(representation / "timestamps_us.npy", "window end times are not increasing")
    if len(label_windows) and (label_windows.min() < 0 or label_windows.max() >= len(ends)
                               or np.any(np.diff(label_windows) <= 0)):
        raise FormatError(representation / "objframe_idx_2_repr_idx.npy",
                          f"label windows must increase within 0..{len(ends) - 1}")
    match = re.search(r"dt=(\d+)", representation.name)
    return WindowIndex(ends, int(match.group(1)) * 1000 if match else 50_000, label_windows)


def _representation_dir(sequence_dir: Path) -> Path:
    if not (sequence_dir / REPRESENTATIONS_DIR).is_dir():
        raise FormatError(sequence_dir, f"no {REPRESENTATIONS_DIR} folder (not an RVT sequence)")
    candidates = sorted(p for p in (sequence_dir / REPRESENTATIONS_DIR).iterdir() if p.is_dir())
    if not candidates:
        raise FormatError(sequence_dir / REPRESENTATIONS_DIR, "no representation folder inside")
    stacked = [p for p in candidates if p.name.startswith("stacked_histogram")]
    return (stacked or candidates)[0]
