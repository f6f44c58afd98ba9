"""Structural check of an AEDAT4 file before the `aedat` decoder sees it.

The decoder (Rust) reads the IOHeader flatbuffer without verification, trusts its description string to
be UTF-8, allocates each packet's declared length before reading it and decompresses LZ4 / ZSTD packets
without a size limit. A corrupt header or a size field of 0xFFFFFFFF aborts the whole Python process
(a panic or a failed allocation cannot be caught). So everything it would trust is checked here first:
the header's offsets and string, every packet's extent, and an upper bound of every packet's decompressed
size from the frame and block headers of its LZ4 / ZSTD stream.
"""

from __future__ import annotations

import struct
from pathlib import Path

from flexdet.errors import FormatError

MAGIC = b"#!AER-DAT4.0\r\n"
MAX_PACKET_BYTES = 1 << 28  # decompressed; DV writes packets of kilobytes to a few megabytes
_RATIO_ALLOWANCE = 64  # decompressed bytes per file byte allowed in total, beyond MAX_PACKET_BYTES
_LZ4_MAGIC, _ZSTD_MAGIC = 0x184D2204, 0xFD2FB528
_LZ4_BLOCK_MAX = {4: 1 << 16, 5: 1 << 18, 6: 1 << 20, 7: 1 << 22}
_ZSTD_BLOCK_MAX = 1 << 17
_COMPRESSIONS = {0: "none", 1: "lz4", 2: "lz4", 3: "zstd", 4: "zstd"}


class _Bad(Exception):
    """A structural problem at a byte offset (turned into FormatError by check_aedat4)."""

    def __init__(self, problem: str, offset: int) -> None:
        super().__init__(problem)
        self.problem, self.offset = problem, offset


def check_aedat4(path: Path) -> None:
    """Raise FormatError (file, offset) unless the header and every packet are safe to hand to the decoder."""
    data = memoryview(Path(path).read_bytes()) if Path(path).stat().st_size <= 1 << 26 else None
    try:
        if data is None:
            with open(path, "rb") as handle:
                _check(_FileBytes(handle, Path(path).stat().st_size))
        else:
            _check(_Bytes(data))
    except _Bad as bad:
        raise FormatError(path, f"corrupt AEDAT4 file: {bad.problem}", offset=bad.offset) from None


class _Bytes:
    """Bounded reads from a buffer in memory."""

    def __init__(self, data) -> None:
        self.data, self.size = data, len(data)

    def read(self, offset: int, count: int) -> bytes:
        if offset < 0 or count < 0 or offset + count > self.size:
            raise _Bad(f"{count} bytes needed past the end of the file", offset)
        return bytes(self.data[offset:offset + count])


class _FileBytes(_Bytes):
    """Bounded reads from a large file, by seeking."""

    def __init__(self, handle, size: int) -> None:
        self.handle, self.size = handle, size

    def read(self, offset: int, count: int) -> bytes:
        if offset < 0 or count < 0 or offset + count > self.size:
            raise _Bad(f"{count} bytes needed past the end of the file", offset)
        self.handle.seek(offset)
        return self.handle.read(count)


def _u(source: _Bytes, offset: int, fmt: str) -> int:
    return struct.unpack(fmt, source.read(offset, struct.calcsize(fmt)))[0]


def _check(source: _Bytes) -> None:
    if source.read(0, len(MAGIC)) != MAGIC:
        raise _Bad("not an AEDAT 4.0 file (magic number)", 0)
    length = _u(source, len(MAGIC), "<I")
    base = len(MAGIC) + 4
    if base + length > source.size:
        raise _Bad(f"header declares {length} bytes, past the end of the file", len(MAGIC))
    compression, data_position = _check_ioheader(_Bytes(memoryview(source.read(base, length))), base)
    _check_packets(source, base + length, compression, data_position)


def _check_ioheader(header: _Bytes, base: int) -> tuple[int, int]:
    """(compression, file data position) of the IOHeader flatbuffer, every offset the decoder follows checked."""
    try:
        table = _u(header, 0, "<I")
        vtable = table - _u(header, table, "<i")
        vtable_size, table_size = _u(header, vtable, "<H"), _u(header, vtable + 2, "<H")
        if vtable_size < 4 or vtable_size % 2 or table + table_size > header.size:
            raise _Bad("IOHeader table does not fit the header", base + vtable)
        header.read(vtable, vtable_size)

        def field(slot: int, fmt: str, default: int) -> tuple[int, int]:
            entry = 4 + 2 * slot
            at = _u(header, vtable + entry, "<H") if entry < vtable_size else 0
            if not at:
                return default, 0
            if at + struct.calcsize(fmt) > table_size:
                raise _Bad("IOHeader field outside its table", base + table + at)
            return _u(header, table + at, fmt), at

        compression, _ = field(0, "<i", 0)
        data_position, _ = field(1, "<q", -1)
        text_offset, at = field(2, "<I", 0)
        if compression not in _COMPRESSIONS:
            raise _Bad(f"unknown compression {compression}", base + table)
        if at:
            start = table + at + text_offset
            text = header.read(start + 4, _u(header, start, "<I"))
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Bad("the header's XML description is not UTF-8 text", base + start + 4 + exc.start) from None
    except _Bad as bad:
        if bad.offset < base:
            bad.offset += base
        raise
    return compression, data_position


def _check_packets(source: _Bytes, position: int, compression: int, data_position: int) -> None:
    total = 0
    allowance = MAX_PACKET_BYTES + _RATIO_ALLOWANCE * source.size
    while not (data_position > -1 and position == data_position):
        remaining = source.size - position
        if remaining < 4:
            return
        if remaining < 8:
            raise _Bad("truncated packet header", position)
        length = _u(source, position + 4, "<I")
        if length > remaining - 8:
            raise _Bad(f"packet declares {length} bytes, past the end of the file", position + 4)
        body = position + 8
        if compression == 0:
            bound = length
        elif _COMPRESSIONS[compression] == "lz4":
            bound = _frames_bound(source, body, body + length, _lz4_frame)
        else:
            bound = _frames_bound(source, body, body + length, _zstd_frame)
        if bound > MAX_PACKET_BYTES:
            raise _Bad(f"packet may decompress to {bound} bytes (limit {MAX_PACKET_BYTES})", position)
        total += bound
        if total > allowance:
            raise _Bad(f"packets may decompress to more than {allowance} bytes in all", position)
        position = body + length


def _frames_bound(source: _Bytes, start: int, end: int, frame) -> int:
    """Upper bound of what the compressed frames in [start, end) decompress to; every frame must parse."""
    if start == end:
        raise _Bad("empty compressed packet", start)
    bound, position = 0, start
    while position < end:
        magic = _u(source, position, "<I")
        if 0x184D2A50 <= magic <= 0x184D2A5F:
            position += 8 + _u(source, position + 4, "<I")
            continue
        size, position = frame(source, position, end, magic)
        bound += size
    if position != end:
        raise _Bad("compressed frame runs past its packet", start)
    return bound


def _lz4_frame(source: _Bytes, position: int, end: int, magic: int) -> tuple[int, int]:
    if magic != _LZ4_MAGIC:
        raise _Bad("not an LZ4 frame", position)
    flags, descriptor = source.read(position + 4, 2)
    if flags >> 6 != 1 or flags & 0x2 or descriptor & 0x8F or (descriptor >> 4) & 7 not in _LZ4_BLOCK_MAX:
        raise _Bad("bad LZ4 frame descriptor", position + 4)
    block_max = _LZ4_BLOCK_MAX[(descriptor >> 4) & 7]
    position += 6 + (8 if flags & 0x8 else 0) + (4 if flags & 0x1 else 0) + 1
    bound = 0
    while True:
        if position + 4 > end:
            raise _Bad("LZ4 frame ends without its end mark", position)
        word = _u(source, position, "<I")
        position += 4
        if word == 0:
            return bound, position + (4 if flags & 0x4 else 0)
        size = word & 0x7FFFFFFF
        if size > block_max:
            raise _Bad(f"LZ4 block of {size} bytes exceeds the frame's {block_max}", position - 4)
        bound += size if word & 0x80000000 else block_max
        position += size + (4 if flags & 0x10 else 0)


def _zstd_frame(source: _Bytes, position: int, end: int, magic: int) -> tuple[int, int]:
    if magic != _ZSTD_MAGIC:
        raise _Bad("not a ZSTD frame", position)
    descriptor = source.read(position + 4, 1)[0]
    if descriptor & 0x8:
        raise _Bad("bad ZSTD frame header", position + 4)
    single_segment = descriptor & 0x20
    position += 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
    position += (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    bound = 0
    while True:
        if position + 3 > end:
            raise _Bad("ZSTD frame ends without its last block", position)
        header = int.from_bytes(source.read(position, 3), "little")
        kind, size = (header >> 1) & 3, header >> 3
        if kind == 3 or size > _ZSTD_BLOCK_MAX:
            raise _Bad("bad ZSTD block header", position)
        position += 3 + (1 if kind == 1 else size)
        bound += size if kind != 2 else _ZSTD_BLOCK_MAX
        if header & 1:
            return bound, position + (4 if descriptor & 0x4 else 0)
