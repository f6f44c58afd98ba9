"""Stream windows of every sequence at a rate, built once with the Numba kernels and kept in memory or on disk.

Training reads the same windows many times; building them once (seconds for the quickstart) turns each
training step into array indexing. The disk cache is keyed by sequence, rate, size and bins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flexdet.atomic import atomic_path
from flexdet.training.datasets.geometry import Geometry
from flexdet.training.datasets.sequences import Sequence
from flexdet.training.ground_truth import format_rate, stream_step_times


def stream_windows(sequence: Sequence, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) int64 µs of a stream at `rate_hz` from the sequence start: ends t0 + round(k / rate),
    each window starting where the previous one ended (exact tiling, no drift)."""
    ends = stream_step_times(sequence.start_us, sequence.end_us, rate_hz)
    starts = np.concatenate([[sequence.start_us], ends[:-1]]).astype(np.int64)
    return starts, ends


def window_histograms(sequence: Sequence, starts: np.ndarray, ends: np.ndarray, geometry: Geometry,
                      bins: int) -> np.ndarray:
    """Histograms of arbitrary windows [starts, ends): one batched kernel call per distinct window length."""
    lengths = ends - starts
    width, height = geometry.size
    out = np.zeros((len(ends), 2 * bins, height, width), np.uint8)
    for length in np.unique(lengths):
        chosen = np.flatnonzero(lengths == length)
        out[chosen] = sequence.histograms(ends[chosen], int(length), geometry, bins)
    return out


class WindowCache:
    """Per (sequence, rate): stream window times, their histograms and the frames at input size."""

    def __init__(self, geometry: Geometry, bins: int, cache_dir: str | None = None, keep: bool = True) -> None:
        self.geometry = geometry
        self.bins = bins
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.keep = keep
        self._windows: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}
        self._histograms: dict[tuple[str, float], np.ndarray] = {}
        self._frames: dict[str, np.ndarray] = {}

    def windows(self, sequence: Sequence, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
        key = (sequence.name, float(rate_hz))
        if key not in self._windows:
            self._windows[key] = stream_windows(sequence, rate_hz)
        return self._windows[key]

    def histograms(self, sequence: Sequence, rate_hz: float, index: np.ndarray) -> np.ndarray:
        """Histograms of the stream's windows `index` (built on demand, or all at once when caching)."""
        starts, ends = self.windows(sequence, rate_hz)
        if not self.keep:
            return window_histograms(sequence, starts[index], ends[index], self.geometry, self.bins)
        key = (sequence.name, float(rate_hz))
        if key not in self._histograms:
            self._histograms[key] = self._load_or_build(sequence, rate_hz, starts, ends)
        return self._histograms[key][index]

    def frames(self, sequence: Sequence) -> np.ndarray:
        """All frames of the sequence at input size, (F, H, W, 3) uint8, decoded once."""
        if sequence.name not in self._frames:
            frames = np.stack([sequence.frame(i, self.geometry) for i in range(len(sequence.frame_times))])
            if not self.keep:
                return frames
            self._frames[sequence.name] = frames
        return self._frames[sequence.name]

    def _load_or_build(self, sequence: Sequence, rate_hz: float, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        path = None
        if self.cache_dir is not None:
            width, height = self.geometry.size
            path = self.cache_dir / f"{sequence.name}_{format_rate(rate_hz)}hz_{width}x{height}_b{self.bins}.npy"
            if path.is_file():
                cached = np.load(path, mmap_mode="r", allow_pickle=False)
                if cached.shape == (len(ends), 2 * self.bins, height, width):
                    return cached
        built = window_histograms(sequence, starts, ends, self.geometry, self.bins)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, built)
        return built
