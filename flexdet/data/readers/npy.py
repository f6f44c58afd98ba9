"""`.npy` files read with their header checked first: an npz archive under the .npy suffix, an object dtype or a
shape declaring more values than the file holds is a FormatError before numpy allocates anything."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from flexdet.errors import FormatError

HEADER_LIMIT = 10_012  # numpy refuses .npy headers over 10,000 bytes; magic, version and length add 12 at most


def load_npy(path: os.PathLike[str] | str) -> np.ndarray:
    """The array of an .npy file; FormatError naming the file when it is not one or its header lies."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        raise FormatError(path, "an npz archive saved with the .npy suffix (np.savez writes .npz; use np.save)")
    try:
        with open(path, "rb") as handle:  # a lying header length must not size a read: 10 kB at most
            head = io.BytesIO(handle.read(HEADER_LIMIT))
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(head))
        if read_header is None:
            raise ValueError("unknown .npy version")
        shape, _, dtype = read_header(head)
        offset = head.tell()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise FormatError(path, f"not an .npy file ({exc})") from None
    if dtype.hasobject:
        raise FormatError(path, f"holds Python objects (dtype {dtype}), which are not read")
    count = int(np.prod(shape, dtype=object))
    available = (path.stat().st_size - offset) // max(dtype.itemsize, 1)
    if count > available:
        raise FormatError(path, f"header declares {count} values (shape {shape}) but the file holds {available}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FormatError(path, f"unreadable .npy ({exc})") from None
