"""Prophesee DAT (`*_td.dat`, Gen1 / 1Mpx / N-CARS): '% ' header, type + size bytes, 8-byte CD records.

Records: uint32 t, uint32 packed x bits 0-13, y bits 14-27, polarity bit 28. Decoded by a one-pass Numba
kernel with the contract of the EVT kernels (see evt3.decode_evt3), so DAT shares the chunked reading
and the sparse index of sequential.py; numpy's multi-pass bit operations plus the running maximum and
coordinate checks ran at a quarter of plain `fromfile` + bit ops, the kernel does them in one pass.
Very old files without any header have no type/size bytes either. Sensor size: see prophesee_header (no Width/Height line and no override
-> unknown; N-CARS crops are such files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from flexdet.data.readers.kernel_status import (
    STATUS_BAD_COORD,
    STATUS_CHECKPOINTS_FULL,
    STATUS_DONE,
    STATUS_OUTPUT_FULL,
)
from flexdet.data.readers.prophesee_header import prophesee_label_path, read_header
from flexdet.data.readers.sequential import Codec, SequentialRecording
from flexdet.errors import FormatError

RECORD_DTYPE = np.dtype([("t", "<u4"), ("data", "<u4")])
CD_EVENT_TYPE = 0
# State slots: running max, corrections.
STATE_SIZE = 2


def initial_state() -> np.ndarray:
    """Decoder state before the first record."""
    return np.array([-1, 0], dtype=np.int64)


@njit(cache=True, nogil=True, boundscheck=False)
def decode_dat(records, state, out, n, store, width, height, step, ck_word, ck_state, ck_count, n_ck,
               word_base, extent):
    """Decode DAT records from `state` (updated in place); same contract as `evt3.decode_evt3`."""
    run_max = state[0]
    corrections = state[1]
    next_ck = (run_max // step + 1) * step if step > 0 else np.int64(1) << 62
    max_x = extent[0]
    max_y = extent[1]
    cap = len(out)
    status = STATUS_DONE
    i = 0
    nr = len(records)
    while i < nr:
        if run_max >= next_ck:
            if n_ck >= len(ck_word):
                status = STATUS_CHECKPOINTS_FULL
                break
            ck_word[n_ck] = word_base + i
            ck_state[n_ck, 0] = run_max
            ck_state[n_ck, 1] = corrections
            ck_count[n_ck] = n
            n_ck += 1
            next_ck = (run_max // step + 1) * step
        data = np.int64(records[i].data)
        x = data & 0x3FFF
        y = (data >> 14) & 0x3FFF
        if x >= width or y >= height:
            status = STATUS_BAD_COORD
            break
        t = np.int64(records[i].t)
        if t < run_max:
            t = run_max
            corrections += 1
        else:
            run_max = t
        if store:
            if n >= cap:
                status = STATUS_OUTPUT_FULL
                break
            out[n].t = t
            out[n].x = x
            out[n].y = y
            out[n].p = (data >> 28) & 1
        max_x = max(max_x, x)
        max_y = max(max_y, y)
        n += 1
        i += 1
    extent[0] = max_x
    extent[1] = max_y
    state[0] = run_max
    state[1] = corrections
    return status, i, n, n_ck


DAT_CODEC = Codec(name="dat", word_dtype=RECORD_DTYPE, state_size=STATE_SIZE, initial_state=initial_state,
                  kernel=decode_dat, coordinate_limit=1 << 14)


def open_dat(path: Path, width: int | None = None, height: int | None = None,
             **options) -> SequentialRecording:
    """Open a DAT file; `width`/`height` override the header."""
    header = read_header(path, stop_at_end_line=False)
    body = header.body_offset
    if body:
        with open(path, "rb") as handle:
            handle.seek(body)
            type_size = handle.read(2)
        if len(type_size) < 2:
            raise FormatError(path, "header is not followed by the event type and size bytes", offset=body)
        if type_size[0] != CD_EVENT_TYPE or type_size[1] != RECORD_DTYPE.itemsize:
            raise FormatError(path, f"event type {type_size[0]} of size {type_size[1]} bytes; only CD events "
                                    f"(type 0, 8 bytes) are supported", offset=body)
        body += 2
    else:
        _refuse_text(path)
    size, source = _dat_sensor_size(header.fields)
    if width is not None or height is not None:
        known = size or (None, None)
        size, source = (width if width is not None else known[0],
                        height if height is not None else known[1]), "override"
    w, h = size if size else (None, None)
    return SequentialRecording(path, DAT_CODEC, body, w, h, source, label_path=prophesee_label_path(path),
                               **options)


def _refuse_text(path: Path) -> None:
    """A file without a '% ' header whose first bytes are all printable text is not event records (a text
    file renamed .dat would otherwise decode as a long recording of garbage)."""
    with open(path, "rb") as handle:
        head = handle.read(256)
    if len(head) >= 16 and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        raise FormatError(path, "not a DAT file: no '% ' header and the content is text", offset=0)


def _dat_sensor_size(fields: dict[str, str]) -> tuple[tuple[int, int] | None, str]:
    width, height = fields.get("width", ""), fields.get("height", "")
    if width.isdigit() and height.isdigit():
        return (int(width), int(height)), "header"
    return None, "unknown"
