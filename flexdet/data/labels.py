"""Read bounding-box label files into BOX_DTYPE: Gen1/1Mpx `*_bbox.npy`, DSEC-Det `tracks.npy`, RVT
`labels.npz`. Field names are unified (Gen1's `ts` -> t, `confidence` -> class_confidence), field types are
taken from the file, since they differ between dataset versions, and every value must fit BOX_DTYPE exactly
(finite coordinates and scores, integral times and ids in range): a bad row is an error naming it. A file's
declared size is checked against the bytes it holds before anything is allocated."""

from __future__ import annotations

import os
import tokenize
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from flexdet.data.boxes import BOX_DTYPE, clip_boxes
from flexdet.data.readers.npy import NPY_MAGIC, read_npy_header
from flexdet.errors import FormatError

_ALIASES = {"ts": "t", "confidence": "class_confidence", "class_conf": "class_confidence"}
_REQUIRED = ("t", "x", "y", "w", "h", "class_id")
_DEFAULTS = {"class_confidence": 1.0, "track_id": 0}
ZIP_MAGIC = b"PK\x03\x04"
# deflate cannot expand data more than about 1032 times: a member declaring more is a lie or a bomb.
DEFLATE_MAX_RATIO = 1032


def source_names(field: str) -> tuple[str, ...]:
    """The file field names that hold BOX_DTYPE's `field` (itself first, then its aliases)."""
    return (field, *(alias for alias, canonical in _ALIASES.items() if canonical == field))


def field_sources(path: os.PathLike[str] | str, dtype: np.dtype, known_only: bool = False) -> dict[str, str]:
    """BOX_DTYPE field -> the file field holding it; two fields meaning one (t and ts) are refused as
    ambiguous, and with `known_only` so is any field that is neither a BOX_DTYPE field nor an alias."""
    sources: dict[str, str] = {}
    for name in dtype.names or ():
        canonical = _ALIASES.get(name, name)
        if canonical in sources:
            raise FormatError(path, f"ambiguous fields: {sources[canonical]!r} and {name!r} both mean "
                                    f"'{canonical}'; keep one")
        if known_only and canonical not in BOX_DTYPE.names:
            raise FormatError(path, f"unknown field {name!r} (box fields are {', '.join(BOX_DTYPE.names)}, "
                                    f"or {', '.join(_ALIASES)})")
        sources[canonical] = name
    return sources


def read_boxes(path: os.PathLike[str] | str, width: int | None = None,
               height: int | None = None, known_only: bool = False) -> np.ndarray:
    """BOX_DTYPE boxes sorted by time (stable), clipped to [0, width) x [0, height) when both are given.

    Boxes left with no area after clipping are dropped. An `.npz` is read from its 'labels' array. With
    `known_only`, fields flexdet does not know are refused instead of ignored.
    """
    boxes = normalise_boxes(path, load_rows(path), known_only)
    if width is not None and height is not None:
        boxes = clip_boxes(boxes, width, height)
    return boxes


def load_rows(path: os.PathLike[str] | str) -> np.ndarray:
    """The 1-D structured array of an `.npy` file, or of an `.npz`'s 'labels' member, read after its header's
    shape is checked against the bytes the file holds (memory is bounded by the file)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "label file does not exist (or is not a readable file)")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
            handle.seek(0)
            if magic.startswith(ZIP_MAGIC):
                return _read_npz_labels(path)
            if magic != NPY_MAGIC:
                raise FormatError(path, "neither an .npy nor an .npz file")
            return _read_npy(path, handle, path.stat().st_size)
    except FormatError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile,
            NotImplementedError) as exc:
        raise FormatError(path, f"not a readable box file ({type(exc).__name__}: {exc})") from None


def _read_npz_labels(path: Path) -> np.ndarray:
    """The 'labels' member of an .npz, its declared and compressed sizes checked first."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        info = members.get("labels.npy")
        if info is None:
            raise FormatError(path, f"npz has no 'labels' array (has {[n.removesuffix('.npy') for n in members]})")
        if info.file_size > DEFLATE_MAX_RATIO * max(info.compress_size, 1):
            raise FormatError(path, f"npz member labels.npy declares {info.file_size} bytes from "
                                    f"{info.compress_size} compressed (more than deflate can expand)")
        with archive.open(info) as handle:
            return _read_npy(path, handle, info.file_size)


def _read_npy(path: Path, handle: IO[bytes], size: int) -> np.ndarray:
    """Rows of the .npy stream `handle` of `size` bytes: 1-D, structured, no objects, exactly as many bytes as
    its header declares (read_npy_header: the header is parsed from a bounded read, so a lying header length
    allocates nothing either)."""
    header = read_npy_header(path, handle, size, exact=True)
    if header.dtype.names is None or len(header.shape) != 1 or header.dtype.itemsize == 0:
        raise FormatError(path, f"expected a 1-D structured array of boxes, got {header.dtype} {header.shape}")
    data = header.head + handle.read(header.nbytes - len(header.head))
    if len(data) != header.nbytes:
        raise FormatError(path, f"file ends after {len(data)} of its {header.nbytes} declared bytes")
    return np.frombuffer(data, dtype=header.dtype, count=header.shape[0])


def normalise_boxes(path: os.PathLike[str] | str, rows: np.ndarray, known_only: bool = False) -> np.ndarray:
    """Map any known label dtype onto BOX_DTYPE (names unified, types converted), sorted by time; a value the
    field cannot hold exactly (nan, inf, a fractional time, a class id past 255) is refused naming its row."""
    if rows.dtype.names is None or rows.ndim != 1:
        raise FormatError(path, f"expected a 1-D structured array of boxes, got {rows.dtype} {rows.shape}")
    names = field_sources(path, rows.dtype, known_only)
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise FormatError(path, f"box array lacks field(s) {missing} (has {list(rows.dtype.names)!r})")
    for field in BOX_DTYPE.names:
        if field in names and (rows.dtype[names[field]].kind not in "iufb" or rows.dtype[names[field]].shape):
            raise FormatError(path, f"field {names[field]!r} has non-numeric dtype {rows.dtype[names[field]]}")
    boxes = np.zeros(len(rows), dtype=BOX_DTYPE)
    for field in BOX_DTYPE.names:
        boxes[field] = _fitted(path, rows[names[field]], names[field], BOX_DTYPE[field]) if field in names \
            else _DEFAULTS[field]
    order = np.argsort(boxes["t"], kind="stable")
    return boxes[order]


def _fitted(path: os.PathLike[str] | str, column: np.ndarray, name: str, target: np.dtype) -> np.ndarray:
    """`column` converted to `target`, refused at its first row the target cannot hold exactly."""
    if target.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            converted = column.astype(target)
        bad = ~np.isfinite(converted)
        reason = "not a finite number"
    else:
        info = np.iinfo(target)
        if column.dtype.kind == "f":
            wide = column.astype(np.float64)
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(wide) | (wide != np.floor(wide)) | (wide < info.min) | (wide >= info.max + 1)
        else:
            bad = (column < info.min) | (column > info.max)
        reason = f"not an integer in {info.min}..{info.max}"
    if np.any(bad):
        row = int(np.argmax(bad))
        raise FormatError(path, f"row {row}: field {name!r} = {column[row].item()!r} is {reason}")
    return column.astype(target)
