"""The one place where a library's exception while reading a file becomes a FormatError naming the file.

h5py, numpy's npz loader, zlib, Numba and the AEDAT4 decoder each raise their own exception types on
corrupt input (KeyError, RuntimeError, zlib.error, tokenize.TokenError, TypingError, ...). Every reader
entry point runs inside `reading(path)`, so a caller only ever sees FlexdetError for a bad file.
MemoryError is not translated: declared sizes are checked before allocating, so one reaching here is a
flexdet bug to fix, not a property of the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from flexdet.errors import FlexdetError, FormatError

MAX_SENSOR_SIDE = 1 << 16  # EVENT_DTYPE stores x and y as uint16


@contextlib.contextmanager
def reading(path: os.PathLike[str] | str, what: str = "cannot read this file") -> Iterator[None]:
    """Re-raise any library exception of the block as FormatError(path, what (type: message))."""
    try:
        yield
    except (FlexdetError, MemoryError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 (the point of this guard: no foreign exception escapes)
        offset = getattr(exc, "offset", None)
        raise FormatError(path, f"{what} ({type(exc).__name__}: {_first_line(exc)})",
                          offset=offset if isinstance(offset, int) and offset >= 0 else None) from exc


def check_sensor_side(path: os.PathLike[str] | str, name: str, value, source: str) -> int | None:
    """`value` as an int in [1, 65536] (None stays None: unknown); FormatError naming the file otherwise."""
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or not 1 <= int(value) <= MAX_SENSOR_SIDE:
        raise FormatError(path, f"{name} {value!r} ({source}) is not a sensor size in 1..{MAX_SENSOR_SIDE}")
    return int(value)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "no message"
