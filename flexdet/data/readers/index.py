"""Sparse time index of a sequential event file: byte offset + decoder state every `step_us` of time.

Built once by a full decoding pass and cached (an npz written atomically) in `$XDG_CACHE_HOME/flexdet/index/`
(default `~/.cache/flexdet/index/`) under a hash of path, size and mtime, never in the dataset's folder; a
`<file>.flexdet-index` beside the file (older flexdet wrote one there) is still read. A cache whose recorded size/mtime,
format, step or version differ from the file's is ignored and rebuilt.

Checkpoint k holds `offsets[k]` (byte offset of the next word), `states[k]` (decoder state there, with
the running maximum of all earlier times in column 0) and `counts[k]` (events before it). As times are
made monotonic by the running maximum, the events of [t0, t1) all lie between the last checkpoint whose
running max is < t0 and the first whose running max is >= t1.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexdet.atomic import atomic_write_bytes

INDEX_VERSION = 1
INDEX_SUFFIX = ".flexdet-index"


@dataclass
class SparseIndex:
    """Checkpoints plus the file-wide summary a full pass yields."""

    offsets: np.ndarray
    states: np.ndarray
    counts: np.ndarray
    num_events: int
    t_first: int
    t_last: int
    time_corrections: int
    max_x: int
    max_y: int
    end_offset: int

    def span(self, t_start: int | None, t_end: int | None) -> tuple[int, int]:
        """Checkpoint index to start decoding from, and the one to stop at (len = end of file)."""
        run_max = self.states[:, 0]
        first = 0 if t_start is None else max(0, int(np.searchsorted(run_max, t_start, side="left")) - 1)
        stop = len(run_max) if t_end is None else int(np.searchsorted(run_max, t_end, side="left"))
        return first, max(stop, first + 1)

    def stop_position(self, stop: int) -> tuple[int, int]:
        """(byte offset, event count) where decoding may stop for checkpoint `stop`."""
        if stop >= len(self.offsets):
            return self.end_offset, self.num_events
        return int(self.offsets[stop]), int(self.counts[stop])


def _signature(source: Path) -> dict[str, int]:
    stat = source.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_paths(source: Path) -> list[Path]:
    """Where the index of `source` may be read from: beside it (where earlier flexdet versions wrote it), then
    the user cache."""
    return [source.with_name(source.name + INDEX_SUFFIX), user_cache_path(source, "index", INDEX_SUFFIX)]


def user_cache_path(source: Path, kind: str, suffix: str) -> Path:
    """A file derived from `source` in `$XDG_CACHE_HOME/flexdet/<kind>/` (default ~/.cache), named by a hash of
    the source's path, size and mtime, for when the source's folder is read-only."""
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flexdet" / kind
    return cache_root / (hashlib.sha256(key).hexdigest()[:32] + suffix)


def load_index(source: Path, kind: str, step_us: int) -> SparseIndex | None:
    """The cached index of `source` if one matches its size, mtime, format and step; else None."""
    expected = dict(_signature(source), version=INDEX_VERSION, step_us=step_us)
    for candidate in cache_paths(source):
        if not candidate.is_file():
            continue
        try:
            with np.load(candidate, allow_pickle=False) as data:
                meta = {k: int(data[k]) for k in expected}
                if meta != expected or str(data["kind"]) != kind:
                    continue
                return SparseIndex(offsets=data["offsets"], states=data["states"], counts=data["counts"],
                                   **{k: int(data[k]) for k in ("num_events", "t_first", "t_last",
                                                                "time_corrections", "max_x", "max_y",
                                                                "end_offset")})
        except (OSError, ValueError, KeyError, EOFError):
            continue
    return None


def save_index(source: Path, kind: str, step_us: int, index: SparseIndex) -> Path | None:
    """Cache `index` in the user cache (never beside the recording: a dataset folder is not written unasked);
    None when the cache cannot be written."""
    buffer = io.BytesIO()
    np.savez(buffer, offsets=index.offsets, states=index.states, counts=index.counts, kind=np.str_(kind),
             version=INDEX_VERSION, step_us=step_us, **_signature(source),
             **{k: getattr(index, k) for k in ("num_events", "t_first", "t_last", "time_corrections",
                                                "max_x", "max_y", "end_offset")})
    cached = user_cache_path(source, "index", INDEX_SUFFIX)
    try:
        atomic_write_bytes(cached, buffer.getvalue())
    except OSError:
        return None
    return cached
