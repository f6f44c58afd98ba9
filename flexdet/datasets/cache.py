"""Stream inputs of every sequence at a rate, built once through the input specification and kept in memory
or on disk.

Training reads the same windows many times; building them once (seconds for the quickstart) turns each
training step into array indexing. The disk cache is keyed by sequence, rate, size, channels, representation
and its rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flexdet.atomic import atomic_path
from flexdet.data.clock import window_of
from flexdet.data.input_spec import InputSpec
from flexdet.data.representations.windows import window_bounds
from flexdet.datasets.ground_truth import format_rate
from flexdet.datasets.sequences import Sequence
from flexdet.errors import ConfigError


def stream_windows(sequence: Sequence, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) int64 µs of a stream at `rate_hz` from the sequence start: the step clock's ends, each
    window starting where the previous one ended (exact tiling, no drift). A sequence of stored windows (RVT)
    streams exactly those, at their own rate only."""
    stored = sequence.stored
    if stored is not None:
        if window_of(rate_hz) != stored.window_us:
            raise ConfigError(f"{sequence.path}: RVT data stores {stored.window_us // 1000} ms windows only (rate "
                              f"{stored.rate_hz:g} Hz); {float(rate_hz):g} Hz was asked for")
        return stored.starts, stored.ends
    return window_bounds(sequence.start_us, sequence.end_us, rate_hz=rate_hz)


class WindowCache:
    """Per (sequence, rate): stream window times, their model inputs and the frames at input size."""

    def __init__(self, spec: InputSpec, cache_dir: str | None = None, keep: bool = True) -> None:
        self.spec = spec
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.keep = keep
        self._windows: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}
        self._inputs: dict[tuple[str, float], np.ndarray] = {}
        self._frames: dict[str, np.ndarray] = {}

    def windows(self, sequence: Sequence, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
        key = (sequence.name, float(rate_hz))
        if key not in self._windows:
            self._windows[key] = stream_windows(sequence, rate_hz)
        return self._windows[key]

    def inputs(self, sequence: Sequence, rate_hz: float, index: np.ndarray) -> np.ndarray:
        """Model inputs of the stream's windows `index` (built on demand, or all at once when caching)."""
        starts, ends = self.windows(sequence, rate_hz)
        if not self.keep:
            return sequence.model_inputs(self.spec, starts[index], ends[index])
        key = (sequence.name, float(rate_hz))
        if key not in self._inputs:
            self._inputs[key] = self._load_or_build(sequence, rate_hz, starts, ends)
        return self._inputs[key][index]

    def frames(self, sequence: Sequence) -> np.ndarray:
        """All frames of the sequence at input size, (F, H, W, 3) uint8, decoded once."""
        if sequence.name not in self._frames:
            frames = np.stack([sequence.frame(i, self.spec) for i in range(len(sequence.frame_times))])
            if not self.keep:
                return frames
            self._frames[sequence.name] = frames
        return self._frames[sequence.name]

    def _load_or_build(self, sequence: Sequence, rate_hz: float, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        path = None
        width, height = self.spec.size
        shape = (len(ends), self.spec.channels, height, width)
        if self.cache_dir is not None:
            spec = self.spec
            kind = "" if spec.representation == "stacked_histogram" else f"{spec.representation}_"
            rule = (f"{kind}{spec.time_norm}{'i' if spec.end_inclusive else ''}c{spec.clip}"
                    f"{'ne' if spec.geometry.samples_events else ''}"
                    f"{'if' if spec.geometry.event_downscale == 'integrate_fire' else ''}"
                    f"{f'h{spec.sub_window_seed}r{spec.sub_window_ratio:g}' if spec.sub_window == 'hashed' else ''}"
                    f"{f'g{spec.end_grid_us}' if spec.end_grid_us else ''}")
            path = self.cache_dir / (f"{sequence.name}_{format_rate(rate_hz)}hz_{width}x{height}_"
                                     f"ch{self.spec.channels}_{rule}.npy")
            if path.is_file():
                cached = np.load(path, mmap_mode="r", allow_pickle=False)
                if cached.shape == shape and cached.dtype == spec.input_dtype:
                    return cached
        built = sequence.model_inputs(self.spec, starts, ends)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, built)
        return built
