"""Score prediction files made by any tool under a benchmark's official rules: one `<sequence>.npy` (or
`<sequence>_bbox.npy`) per sequence, box rows of any dtype read by field name (the Prophesee toolbox's,
flexdet's, Gen1's), in the label files' frame and class ids, matched to the label files by sequence name.
Prints AP, AP50, AP75, APs, APm, APl (see docs/benchmarks.md for each benchmark's rules)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True,
                        choices=["gen1", "1mpx", "dsec2", "dsec8", "flexevent2", "flexevent8"],
                        help="rules to score by: Gen1 / 1Mpx as RVT scores them, DSEC-Det 2 or 8 classes as DAGr "
                             "(dsec2/8) or as FlexEvent's evaluator (flexevent2/8)")
    parser.add_argument("--labels", required=True,
                        help="dataset root (Gen1/1Mpx split folders, DSEC-Det train/ test/, RVT preprocessed) "
                             "or a folder of label files (<sequence>_bbox.npy)")
    parser.add_argument("--predictions", required=True, help="folder with one <sequence>.npy per sequence")
    parser.add_argument("--split", default="test", help="split of a dataset root (default test)")
    parser.add_argument("--granularity", choices=["instant", "sequence"], default=None,
                        help="instant: each labelled instant with its own predictions (RVT's reported numbers, "
                             "the default); sequence: predictions within the time tolerance pooled per file "
                             "(the Prophesee toolbox's psee_evaluator)")
    parser.add_argument("--downsample", type=int, default=1,
                        help="score at 1/N resolution (2 = RVT's 1 Mpx evaluation: boxes and size thresholds halved)")
    parser.add_argument("--coco-out", help="also write the scored images as COCO json (ground_truth/results.json)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (fractions in 0..1, null = "
                                                            "no ground truth in that size range)")


def run(args: argparse.Namespace) -> int:
    from flexdet.data.labels import read_boxes
    from flexdet.errors import ConfigError
    from flexdet.training.benchmarks import get_benchmark, score_sequences

    if args.downsample < 1:
        raise ConfigError(f"--downsample must be a positive integer, got {args.downsample}")
    benchmark = get_benchmark(args.benchmark).downsampled(args.downsample)
    labels = label_files(Path(args.labels), args.split)
    predictions = prediction_files(Path(args.predictions), list(labels))
    metrics = score_sequences(benchmark, [read_boxes(path) for path in labels.values()],
                              [read_predictions(path) for path in predictions], args.granularity,
                              coco_dir=args.coco_out)
    values = {name: metrics[name] for name in METRICS}
    if args.json:
        print(json.dumps({name: None if math.isnan(v) else v for name, v in values.items()}))
        return 0
    print(f"{benchmark.name} ({len(labels)} sequences, {args.granularity or benchmark.granularity} granularity)")
    for name, value in values.items():
        print(f"{name:5s} {'-' if math.isnan(value) else f'{100 * value:.2f}'}")
    return 0


def label_files(root: Path, split: str) -> dict[str, Path]:
    """Sequence name -> label file, from a folder of label files or a dataset root of a known layout."""
    from flexdet.errors import ConfigError
    from flexdet.training.datasets.dsec_split import split_folder, split_names

    if not root.is_dir():
        raise ConfigError(f"--labels {root}: folder not found")
    for folder in (root, root / split):
        found = {p.name[:-len("_bbox.npy")]: p for p in sorted(folder.glob("*_bbox.npy"))}
        if found:
            return found
    tracks = "object_detections/left/tracks.npy"
    if any(root.glob(f"*/{tracks}")) or any(root.glob(f"*/*/{tracks}")):
        base = root / split_folder(split) if (root / "train").is_dir() or (root / "test").is_dir() else root
        found = {name: base / name / tracks for name in sorted(split_names(root)[split])
                 if (base / name / tracks).is_file()}
        if found:
            return found
        raise ConfigError(f"--labels {root}: no DSEC-Det label files of split {split!r} under {base}")
    for folder in (root / split, root):
        found = {p.parent.parent.name: p for p in sorted(folder.glob("*/labels_v2/labels.npz"))}
        if found:
            return found
    found = {p.stem: p for p in sorted(root.glob("*.npy"))}
    if found:
        return found
    raise ConfigError(f"--labels {root}: no label files (<sequence>_bbox.npy, DSEC-Det tracks.npy, RVT "
                      f"labels_v2/labels.npz or <sequence>.npy) in it or in its {split!r} folder")


def prediction_files(folder: Path, sequences: list[str]) -> list[Path]:
    """The prediction file of each sequence: `<sequence>.npy`, else `<sequence>_bbox.npy`."""
    from flexdet.errors import ConfigError

    if not folder.is_dir():
        raise ConfigError(f"--predictions {folder}: folder not found")
    paths, missing = [], []
    for name in sequences:
        candidates = [folder / f"{name}.npy", folder / f"{name}_bbox.npy"]
        found = next((p for p in candidates if p.is_file()), None)
        (paths if found else missing).append(found or name)
    if missing:
        raise ConfigError(f"--predictions {folder}: no <sequence>.npy for {len(missing)} labelled sequence(s): "
                          f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return paths


def read_predictions(path: Path):
    """Prediction rows of any box dtype, by field name; a score field is required."""
    import numpy as np

    from flexdet.data.labels import normalise_boxes
    from flexdet.errors import FormatError

    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise FormatError(path, f"not a readable .npy of box rows ({exc})") from None
    names = rows.dtype.names or ()
    if not {"class_confidence", "confidence", "class_conf"} & set(names):
        raise FormatError(path, f"predictions need a score field (class_confidence), have {list(names)}")
    return normalise_boxes(path, rows)
