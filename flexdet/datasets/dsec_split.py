"""DSEC-Det's train / val / test split, as dsec-det's loader applies it to the folder it downloads.

The download has `train/` and `test/`; the validation sequences sit inside `train/` and are picked, like
the training ones, by name from dsec-det's `config/train_val_test_split.yaml` (shipped with flexdet as
data; a `train_val_test_split.yaml` in the dataset root takes its place). A folder with the sequences
directly under its root is split by the same names.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from flexdet.config import parse_yaml
from flexdet.errors import ConfigError, FormatError

SPLITS = ("train", "val", "test")
SPLIT_FILE = "train_val_test_split.yaml"
SHIPPED_SPLIT = Path(__file__).resolve().parents[1] / "benchmarks_data" / "dsec_det_split.yaml"
TRACKS = Path("object_detections") / "left" / "tracks.npy"
EVENTS = Path("events") / "left" / "events.h5"


def split_folder(split: str) -> str:
    """The download folder a split's sequences live in: `train/` for train and val, `test/` for test."""
    if split not in SPLITS:
        raise ConfigError(f"DSEC-Det split must be one of {', '.join(SPLITS)}, got {split!r}")
    return "test" if split == "test" else "train"


def split_names(root: Path | None = None) -> dict[str, tuple[str, ...]]:
    """Sequence names of each split: `root/train_val_test_split.yaml` when present, else dsec-det's file."""
    path = root / SPLIT_FILE if root is not None and (root / SPLIT_FILE).is_file() else SHIPPED_SPLIT
    return _read_split(path)


def _read_split(path: Path) -> dict[str, tuple[str, ...]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, f"not a readable split file ({exc})") from None
    return _parse_split(path, text)


@cache
def _parse_split(path: Path, text: str) -> dict[str, tuple[str, ...]]:
    """The names of a split file's text (cached by path and text: a file rewritten meanwhile is read anew)."""
    loaded = parse_yaml(text, str(path))
    if not isinstance(loaded, dict) or not all(isinstance(loaded.get(s), list) for s in SPLITS):
        raise FormatError(path, f"expected lists of sequence names under {', '.join(SPLITS)}")
    for split in SPLITS:
        for name in loaded[split]:
            if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
                shown = repr(name[:60]) if isinstance(name, str) else f"a {type(name).__name__}"
                raise FormatError(path, f"{split}: {shown} is not a plain sequence folder name")
    return {split: tuple(loaded[split]) for split in SPLITS}


def dsec_folders(root: Path, split: str) -> list[Path]:
    """The sequence folders of `split` (sorted by name): every one the split file names, under `root/train` or
    `root/test` (the official download) or directly under `root`, with its event data; one that is missing is an
    error (split_sequences), since training or evaluating on the others would change the result without a word."""
    folders = split_sequences(root, split, EVENTS)
    if not folders:
        raise ConfigError(f"{root}: no DSEC-Det sequences of split {split!r}: {split_source(root)} names none")
    return list(folders.values())


def split_base(root: Path, split: str) -> Path:
    """The folder holding a split's sequences: `root/train` or `root/test` in the official layout, else `root`."""
    folder = split_folder(split)
    return root / folder if (root / "train").is_dir() or (root / "test").is_dir() else root


def split_source(root: Path) -> Path:
    """The split file that names the sequences of `root`: its own train_val_test_split.yaml, else dsec-det's."""
    return root / SPLIT_FILE if (root / SPLIT_FILE).is_file() else SHIPPED_SPLIT


def split_sequences(root: Path, split: str, needed: Path) -> dict[str, Path]:
    """Name -> folder of every sequence the split file names for `split` (sorted by name), each holding `needed`
    (EVENTS to train or evaluate, TRACKS to score); the one rule for training and scoring: a named sequence
    without it is a ConfigError naming the split file and the missing sequences."""
    base = split_base(root, split)
    folders = {name: base / name for name in sorted(split_names(root)[split])}
    missing = [name for name, folder in folders.items() if not (folder / needed).is_file()]
    if missing:
        hint = "; validation sequences live in train/" if split == "val" else ""
        raise ConfigError(f"{split_source(root)} names {len(folders)} {split!r} sequence(s) but {len(missing)} have "
                          f"no {needed.as_posix()} under {base}: {', '.join(missing[:5])}"
                          f"{' ...' if len(missing) > 5 else ''} (put a {SPLIT_FILE} naming the sequences you have "
                          f"in {root}{hint})")
    return folders


def dsec_label_files(root: Path, split: str) -> dict[str, Path]:
    """The tracks.npy of every sequence the split file names for `split` (by name); one that is missing is an
    error (split_sequences), since scoring the others would change the result without a word."""
    return {name: folder / TRACKS for name, folder in split_sequences(root, split, TRACKS).items()}
