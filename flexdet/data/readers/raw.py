"""Prophesee RAW files (`.raw`): '%' header then EVT 2.0 or EVT 3.0 words, decoded by Numba kernels."""

from __future__ import annotations

from pathlib import Path

from flexdet.data.readers import evt2, evt3
from flexdet.data.readers.prophesee_header import PropheseeHeader, prophesee_label_path, read_header
from flexdet.data.readers.sequential import Codec, SequentialRecording
from flexdet.errors import UnsupportedFormatError

EVT2_CODEC = Codec(name="evt2", word_dtype=evt2.WORD_DTYPE, state_size=evt2.STATE_SIZE,
                   initial_state=evt2.initial_state, kernel=evt2.decode_evt2, coordinate_limit=1 << 11)
EVT3_CODEC = Codec(name="evt3", word_dtype=evt3.WORD_DTYPE, state_size=evt3.STATE_SIZE,
                   initial_state=evt3.initial_state, kernel=evt3.decode_evt3, coordinate_limit=1 << 11)


def raw_codec(path: Path, header: PropheseeHeader) -> Codec:
    """EVT 2.0 or 3.0 from the `% evt` line or the `% format` line."""
    version = header.fields.get("evt", "").strip()
    fmt = header.fields.get("format", "").split(";")[0].strip().upper()
    if version in ("3.0", "3") or fmt == "EVT3":
        return EVT3_CODEC
    if version in ("2.0", "2") or fmt == "EVT2":
        return EVT2_CODEC
    stated = version or fmt or "none"
    raise UnsupportedFormatError(f"{path}: RAW encoding '{stated}' is not supported (EVT 2.0 and EVT 3.0 are)")


def open_raw(path: Path, width: int | None = None, height: int | None = None,
             **options) -> SequentialRecording:
    """Open a RAW file; the sensor size comes from the override, the header or the known-camera table."""
    header = read_header(path, stop_at_end_line=True)
    codec = raw_codec(path, header)
    size, source = header.sensor_size()
    if width is not None or height is not None:
        known = size or (None, None)
        size, source = (width if width is not None else known[0],
                        height if height is not None else known[1]), "override"
    w, h = size if size else (None, None)
    return SequentialRecording(path, codec, header.body_offset, w, h, source, label_path=prophesee_label_path(path),
                               **options)
