"""Read bounding-box label files into BOX_DTYPE: Gen1/1Mpx `*_bbox.npy`, DSEC-Det `tracks.npy`, RVT
`labels.npz`. Field names are unified (Gen1's `ts` -> t, `confidence` -> class_confidence) and field
types are taken from the file, since they differ between dataset versions."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from flexdet.data.boxes import BOX_DTYPE, clip_boxes
from flexdet.errors import FormatError

_ALIASES = {"ts": "t", "confidence": "class_confidence", "class_conf": "class_confidence"}
_REQUIRED = ("t", "x", "y", "w", "h", "class_id")
_DEFAULTS = {"class_confidence": 1.0, "track_id": 0}


def read_boxes(path: os.PathLike[str] | str, width: int | None = None,
               height: int | None = None) -> np.ndarray:
    """BOX_DTYPE boxes sorted by time (stable), clipped to [0, width) x [0, height) when both are given.

    Boxes left with no area after clipping are dropped. An `.npz` is read from its 'labels' array.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "label file does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                if "labels" not in loaded.files:
                    raise FormatError(path, f"npz has no 'labels' array (has {loaded.files})")
                rows = loaded["labels"]
        else:
            rows = loaded
    except FormatError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(path, f"not a readable label file ({exc})") from None
    boxes = normalise_boxes(path, rows)
    if width is not None and height is not None:
        boxes = clip_boxes(boxes, width, height)
    return boxes


def normalise_boxes(path: Path, rows: np.ndarray) -> np.ndarray:
    """Map any known label dtype onto BOX_DTYPE (names unified, types converted), sorted by time."""
    if rows.dtype.names is None or rows.ndim != 1:
        raise FormatError(path, f"expected a 1-D structured array of boxes, got {rows.dtype} {rows.shape}")
    names = {_ALIASES.get(name, name): name for name in rows.dtype.names}
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise FormatError(path, f"box array lacks field(s) {missing} (has {list(rows.dtype.names)})")
    boxes = np.zeros(len(rows), dtype=BOX_DTYPE)
    for field in BOX_DTYPE.names:
        if field in names:
            column = rows[names[field]]
            if column.dtype.kind not in "iufb":
                raise FormatError(path, f"field '{names[field]}' has non-numeric dtype {column.dtype}")
            boxes[field] = column
        else:
            boxes[field] = _DEFAULTS[field]
    order = np.argsort(boxes["t"], kind="stable")
    return boxes[order]
