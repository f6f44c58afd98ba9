"""`.npy` files read with their header checked first: an npz archive under the .npy suffix, an object dtype or a
shape declaring more values than the file holds is a FormatError before numpy allocates anything.

`read_npy_header` is the one .npy header check: `load_npy` (RVT arrays), the label reader
(flexdet.data.labels, .npy and .npz members) and the npz event reader (flexdet.data.readers.plain) all use it."""

from __future__ import annotations

import io
import os
import tokenize
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from flexdet.errors import FormatError

NPY_MAGIC = b"\x93NUMPY"
HEADER_LIMIT = 10_012  # numpy refuses .npy headers over 10,000 bytes; magic, version and length add 12 at most
VERSIONS = ((1, 0), (2, 0))  # what np.save writes; 3.0 only differs by a UTF-8 header (non-latin-1 field names)


@dataclass(frozen=True)
class NpyHeader:
    """An .npy header read by `read_npy_header`: the array's shape and dtype, where its data starts, and the
    data bytes already read with the header (`head`, at most HEADER_LIMIT bytes in all)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int
    head: bytes

    @property
    def count(self) -> int:
        """Values the shape declares (a Python int: no overflow)."""
        count = 1
        for side in self.shape:
            count *= int(side)
        return count

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


def read_npy_header(path: os.PathLike[str] | str, handle: IO[bytes], size: int, *, exact: bool = False,
                    versions: tuple[tuple[int, int], ...] = VERSIONS, member: str | None = None,
                    at: int | None = None) -> NpyHeader:
    """The header of the .npy stream `handle` of `size` bytes, parsed from at most HEADER_LIMIT bytes read first
    (a lying header length sizes no read), checked before any data is read: a format version in `versions`, no
    Python objects, and a shape declaring no more data bytes than the stream holds after the header (`exact`:
    exactly as many). FormatError naming `path` (and the archive `member`, at byte offset `at`) otherwise."""
    where = f"member {member!r}: " if member else ""
    head = io.BytesIO(handle.read(min(size, HEADER_LIMIT)))
    try:
        version = np.lib.format.read_magic(head)
        if version not in versions:
            raise FormatError(path, f"{where}.npy format version {version[0]}.{version[1]} is not supported "
                                    f"({', '.join(f'{a}.{b}' for a, b in versions)})", offset=at)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read(head)
    except (ValueError, SyntaxError, EOFError, TypeError, tokenize.TokenError) as exc:
        raise FormatError(path, f"{where}not an .npy header ({type(exc).__name__}: {exc})", offset=at) from None
    if dtype.hasobject:
        raise FormatError(path, f"{where}holds Python objects (dtype {dtype}), which are not read", offset=at)
    header = NpyHeader(tuple(int(side) for side in shape), dtype, bool(fortran_order), head.tell(), head.read())
    available = size - header.offset
    if (header.nbytes != available) if exact else (header.nbytes > available):
        raise FormatError(path, f"{where}header declares {header.count} values (shape {header.shape}, {dtype}: "
                                f"{header.nbytes} bytes) but the file holds {available} bytes after the header",
                          offset=at)
    return header


def load_npy(path: os.PathLike[str] | str) -> np.ndarray:
    """The array of an .npy file; FormatError naming the file when it is not one or its header lies."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        raise FormatError(path, "an npz archive saved with the .npy suffix (np.savez writes .npz; use np.save)")
    try:
        with open(path, "rb") as handle:
            read_npy_header(path, handle, path.stat().st_size)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FormatError(path, f"unreadable .npy ({exc})") from None
