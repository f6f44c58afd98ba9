"""Shared machinery of the word-stream formats (DAT, EVT 2.0, EVT 3.0): chunked decoding and the index.

A `Codec` names a decoding kernel with the contract of `evt3.decode_evt3`. The file body is read in
chunks of `chunk_bytes` into one reusable buffer (memory stays bounded whatever the file size), the
decoder state is carried from chunk to chunk, and windowed reads start from a checkpoint of the sparse
index (see index.py) so only the needed part of the file is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexdet.data.events import EVENT_DTYPE, empty_events, time_slice
from flexdet.data.readers.base import Recording
from flexdet.data.readers.index import SparseIndex, load_index, save_index
from flexdet.data.readers.kernel_status import (
    STATUS_BAD_COORD,
    STATUS_BAD_WORD,
    STATUS_CHECKPOINTS_FULL,
    STATUS_DONE,
    STATUS_OUTPUT_FULL,
)
from flexdet.errors import FormatError

DEFAULT_CHUNK_BYTES = 16 << 20
DEFAULT_INDEX_STEP_US = 5_000
_NO_CHECKPOINTS = 0


@dataclass(frozen=True)
class Codec:
    """How to decode one word-stream format."""

    name: str
    word_dtype: np.dtype
    state_size: int
    initial_state: Callable[[], np.ndarray]
    kernel: Callable
    coordinate_limit: int


class SequentialRecording(Recording):
    """A recording stored as a header then a stream of fixed-size words decoded by a kernel."""

    def __init__(self, path: Path, codec: Codec, body_offset: int, width: int | None,
                 height: int | None, size_source: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 index_step_us: int = DEFAULT_INDEX_STEP_US, cache_index: bool = True,
                 label_path: Path | None = None) -> None:
        super().__init__(path, width, height, size_source)
        self._labels_file = label_path
        self.format = codec.name
        self.codec = codec
        self.body_offset = body_offset
        word = codec.word_dtype.itemsize
        self.chunk_bytes = max(word, int(chunk_bytes) // word * word)
        file_size = self.path.stat().st_size
        if (file_size - body_offset) % word:
            partial = file_size - (file_size - body_offset) % word
            raise FormatError(path, f"truncated {word}-byte word at the end of the file", offset=partial)
        self.file_size = file_size
        self.index_step_us = int(index_step_us)
        index = load_index(self.path, codec.name, self.index_step_us) if cache_index else None
        if index is None:
            index = self._build_index()
            if cache_index:
                save_index(self.path, codec.name, self.index_step_us, index)
        self.index = index
        self._check_extent(index)
        self.num_events = index.num_events
        self.time_corrections = index.time_corrections
        self.t_start = index.t_first if index.num_events else 0
        self.t_end = index.t_last + 1 if index.num_events else 0
        self.coordinate_extent = (index.max_x + 1, index.max_y + 1) if index.num_events else (0, 0)

    def _label_path(self) -> Path | None:
        return self._labels_file if self._labels_file is not None and self._labels_file.is_file() else None

    def _limits(self) -> tuple[int, int]:
        limit = self.codec.coordinate_limit
        return (self._width if self._width is not None else limit,
                self._height if self._height is not None else limit)

    def _check_extent(self, index: SparseIndex) -> None:
        width, height = self._limits()
        for name, seen, limit in (("x", index.max_x, width), ("y", index.max_y, height)):
            if index.num_events and seen >= limit:
                raise FormatError(self.path, f"events reach {name}={seen}, outside the sensor "
                                             f"({self._width}x{self._height}, {self.size_source})")

    def _decode(self, start: int, stop: int, state: np.ndarray, out: np.ndarray, store: bool,
                step: int = 0, checkpoints: list | None = None) -> tuple[int, np.ndarray]:
        """Run the kernel over bytes [start, stop) of the file; returns (events decoded, max x and y)."""
        word = self.codec.word_dtype.itemsize
        width, height = self._limits()
        buffer = np.empty(min(self.chunk_bytes, max(stop - start, word)), dtype=np.uint8)
        extent = np.full(2, -1, dtype=np.int64)
        ck_word, ck_state, ck_count = _checkpoint_arrays(1024 if step else 0, self.codec.state_size)
        n = n_ck = 0
        with open(self.path, "rb") as handle:
            handle.seek(start)
            pos = start
            while pos < stop:
                size = min(len(buffer), stop - pos)
                got = handle.readinto(memoryview(buffer)[:size])
                if got != size:
                    raise FormatError(self.path, "file shrank while reading", offset=pos + got)
                words = buffer[:size].view(self.codec.word_dtype)
                word_base = (pos - self.body_offset) // word
                done = 0
                while True:
                    status, i, n, n_ck = self.codec.kernel(words[done:], state, out, n, store, width, height,
                                                           step, ck_word, ck_state, ck_count, n_ck,
                                                           word_base + done, extent)
                    if status != STATUS_CHECKPOINTS_FULL:
                        break
                    checkpoints.append((ck_word[:n_ck].copy(), ck_state[:n_ck].copy(), ck_count[:n_ck].copy()))
                    n_ck = 0
                    done += i
                if status == STATUS_DONE:
                    pos += size
                    continue
                offset = pos + (done + i) * word
                if status == STATUS_BAD_WORD:
                    raise FormatError(self.path, f"unknown {self.codec.name} word type "
                                                 f"0x{int(words[done + i]) >> (8 * word - 4):x}", offset=offset)
                if status == STATUS_BAD_COORD:
                    raise FormatError(self.path, f"event outside the sensor ({width}x{height}, "
                                                 f"{self.size_source})", offset=offset)
                if status == STATUS_OUTPUT_FULL:
                    raise FormatError(self.path, "file changed since it was indexed (more events than "
                                                 "recorded); delete its .flexdet-index", offset=offset)
        if checkpoints is not None and n_ck:
            checkpoints.append((ck_word[:n_ck].copy(), ck_state[:n_ck].copy(), ck_count[:n_ck].copy()))
        return n, extent

    def _build_index(self) -> SparseIndex:
        state = self.codec.initial_state()
        parts: list = [(np.zeros(1, np.int64), state[None].copy(), np.zeros(1, np.int64))]
        n, extent = self._decode(self.body_offset, self.file_size, state, empty_events(0), False,
                                 step=self.index_step_us, checkpoints=parts)
        word = self.codec.word_dtype.itemsize
        offsets = self.body_offset + np.concatenate([p[0] for p in parts]) * word
        index = SparseIndex(offsets=offsets, states=np.concatenate([p[1] for p in parts]),
                            counts=np.concatenate([p[2] for p in parts]), num_events=n, t_first=0,
                            t_last=int(state[0]), time_corrections=int(state[1]),
                            max_x=int(extent[0]), max_y=int(extent[1]), end_offset=self.file_size)
        if n:
            stop_offset, count = index.stop_position(int(np.argmax(index.counts > 0)) if index.counts[-1] else
                                                     len(index.counts))
            head = np.empty(count, dtype=EVENT_DTYPE)
            self._decode(self.body_offset, stop_offset, self.codec.initial_state(), head, True)
            index.t_first = int(head["t"][0])
        return index

    def _read(self, t_start: int | None, t_end: int | None) -> np.ndarray:
        first, stop = self.index.span(t_start, t_end)
        start_offset = int(self.index.offsets[first])
        stop_offset, stop_count = self.index.stop_position(stop)
        expected = stop_count - int(self.index.counts[first])
        out = np.empty(expected, dtype=EVENT_DTYPE)
        n, _ = self._decode(start_offset, stop_offset, self.index.states[first].copy(), out, True)
        if n != expected:
            raise FormatError(self.path, f"file changed since it was indexed ({n} events where the index "
                                         f"recorded {expected}); delete its .flexdet-index")
        return time_slice(out, t_start, t_end)


def _checkpoint_arrays(capacity: int, state_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.zeros(capacity, np.int64), np.zeros((capacity, state_size), np.int64),
            np.zeros(capacity, np.int64))
