"""Score prediction files made by any tool under a benchmark's official rules: one `<sequence>.npy` per labelled
sequence, box rows of any dtype read by field name (the Prophesee toolbox's, flexdet's, Gen1's), in the label
files' frame and class ids, matched to the label files by sequence name. Prints AP, AP50, AP75, APs, APm, APl
(see docs/benchmarks.md for each benchmark's rules) and what was scored.

Nothing is dropped without a word: every labelled sequence of the split needs its prediction file and every
prediction file its sequence, label files are never read as predictions, each row's values must be finite and fit
the box fields, and the benchmark must fit the labels (their layout, sensor size and class ids)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flexdet.datasets.benchmarks import BENCHMARKS

if TYPE_CHECKING:
    from flexdet.datasets.benchmarks import Benchmark
    from flexdet.datasets.sequences import LabelFiles

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The score command's options."""
    parser.add_argument("--benchmark", required=True, choices=tuple(BENCHMARKS),
                        help="rules to score by: Gen1 / 1Mpx as RVT scores them, DSEC-Det 2 or 8 classes as DAGr "
                             "(dsec2/8) or as FlexEvent's evaluator (flexevent2/8), or a flexdet synthetic dataset "
                             "(its dataset.yaml's classes and size, as flexdet eval scores it)")
    parser.add_argument("--labels", required=True,
                        help="dataset root (flexdet synth / quickstart data, Gen1/1Mpx split folders, DSEC-Det "
                             "train/ test/, RVT preprocessed) or a folder of label files (<sequence>_bbox.npy)")
    parser.add_argument("--predictions", required=True,
                        help="folder with one <sequence>.npy per labelled sequence and nothing else "
                             "(flexdet eval writes them to <out>/predictions/<rate>hz/)")
    parser.add_argument("--split", default="test", help="split of a dataset root (default test)")
    parser.add_argument("--granularity", choices=["instant", "sequence"], default=None,
                        help="instant: each labelled instant with its own predictions (RVT's reported numbers, "
                             "the default); sequence: predictions within the time tolerance pooled per file "
                             "(the Prophesee toolbox's psee_evaluator)")
    parser.add_argument("--downsample", type=int, default=1,
                        help="score at 1/N resolution (2 = RVT's 1 Mpx evaluation: boxes and size thresholds halved)")
    parser.add_argument("--coco-out", help="also write the scored images as COCO json (ground_truth/results.json)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: the metrics (fractions in 0..1, null = no ground truth in that "
                             "size range), the sequences, instants and boxes scored and the rule applied")


def run(args: argparse.Namespace) -> int:
    """Score the predictions folder against the labels; 0 on success."""
    from flexdet.atomic import require_output_dir
    from flexdet.data.labels import read_boxes
    from flexdet.datasets.sequences import label_files
    from flexdet.errors import ConfigError, FlexdetError
    from flexdet.evaluation.benchmark_score import score_sequences

    if args.downsample < 1:
        raise ConfigError(f"--downsample must be a positive integer, got {args.downsample}")
    coco_out = None if args.coco_out is None else require_output_dir(args.coco_out, "--coco-out")
    labels = label_files(Path(args.labels), args.split)
    benchmark = fitting_benchmark(args.benchmark, labels)
    predictions = prediction_files(Path(args.predictions), Path(args.labels), labels, args.split)
    gt_rows = [read_boxes(path, known_only=True) for path in labels.files.values()]
    check_class_ids(benchmark, labels, gt_rows)
    dt_rows = [read_predictions(path) for path in predictions]
    benchmark = benchmark.downsampled(args.downsample)
    granularity = args.granularity or benchmark.granularity
    with coco_written(coco_out) as coco_dir:
        metrics = score_sequences(benchmark, gt_rows, dt_rows, granularity, coco_dir=coco_dir)
        if metrics["ground_truth_boxes"] == 0:
            raise FlexdetError(f"{args.labels}: no ground-truth box of {benchmark.name} is left to score in "
                               f"{len(gt_rows)} sequence(s) ({sum(len(r) for r in gt_rows)} label rows, all outside "
                               f"its classes, size filter or time skip): there is nothing to score")
    rule = scoring_rule(benchmark, granularity)
    report = {name: None if math.isnan(metrics[name]) else metrics[name] for name in METRICS}
    report.update(benchmark=benchmark.name, granularity=granularity, sequences=list(labels.files),
                  instants=metrics["images"], ground_truth_boxes=metrics["ground_truth_boxes"],
                  prediction_rows=sum(len(rows) for rows in dt_rows), rule=rule)
    if args.json:
        print(f"flexdet score: {rule}", file=sys.stderr)
        print(json.dumps(report))
        return 0
    print(f"{benchmark.name}: {len(gt_rows)} sequences, {report['instants']} instants, "
          f"{report['ground_truth_boxes']} ground-truth boxes, {report['prediction_rows']} prediction rows")
    for name in METRICS:
        value = metrics[name]
        print(f"{name:5s} {'-' if math.isnan(value) else f'{100 * value:.2f}'}")
    print(rule)
    return 0


@contextlib.contextmanager
def coco_written(folder: Path | None) -> Iterator[Path | None]:
    """A hidden staging folder inside `folder` to write the COCO files in (None: no COCO output); they are moved
    into `folder` only when the block succeeds, so a refused or failed score leaves no COCO file (nor a folder it
    made)."""
    from flexdet.atomic import staging_dir
    from flexdet.errors import ConfigError

    if folder is None:
        yield None
        return
    made = not folder.exists()
    staging = staging_dir(folder, "coco")
    done = False
    try:
        yield staging
        for item in sorted(staging.iterdir()):
            try:
                os.replace(item, folder / item.name)
            except OSError as exc:
                raise ConfigError(f"--coco-out {folder}: cannot write {item.name} ({exc.strerror})") from None
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made and not done:
            with contextlib.suppress(OSError):
                folder.rmdir()


def fitting_benchmark(name: str, labels: LabelFiles) -> Benchmark:
    """The benchmark `name` for these labels, refused when it does not fit their layout or sensor size."""
    from flexdet.datasets.benchmarks import get_benchmark
    from flexdet.errors import ConfigError

    if name == "synthetic":
        if labels.synthetic is None:
            raise ConfigError(f"--benchmark synthetic does not fit {labels.layout} labels: it takes its classes and "
                              f"size from a flexdet dataset's dataset.yaml")
        return labels.synthetic
    benchmark = get_benchmark(name)
    layout = labels.synthetic_layout or labels.layout
    width, height = benchmark.sensor_size
    if layout not in benchmark.layouts:
        fitting = [n for n in BENCHMARKS if n != "synthetic" and layout in get_benchmark(n).layouts]
        raise ConfigError(f"--benchmark {name} does not fit {layout} labels (it scores "
                          f"{' / '.join(benchmark.layouts)} labels of a {width}x{height} sensor); pick one of "
                          f"{', '.join(fitting)}")
    if labels.size is not None and labels.size != benchmark.sensor_size:
        raise ConfigError(f"--benchmark {name} does not fit these labels: they are a flexdet synthetic dataset of "
                          f"{labels.size[0]}x{labels.size[1]} (dataset.yaml) and {name} scores a {width}x{height} "
                          f"sensor; use --benchmark synthetic, the rules flexdet eval scores it with")
    return benchmark


def check_class_ids(benchmark: Benchmark, labels: LabelFiles, rows: list[np.ndarray]) -> None:
    """Refuse labels holding class ids that the benchmark's label files never have (1 Mpx labels under gen1)."""
    from flexdet.errors import ConfigError

    name = benchmark.name
    allowed = set(benchmark.class_map) if name == "synthetic" else set(range(benchmark.file_classes))
    for path, boxes in zip(labels.files.values(), rows):
        unknown = sorted(set(np.unique(boxes["class_id"]).tolist()) - allowed)
        if unknown:
            raise ConfigError(f"--benchmark {name} does not fit {path}: class id {unknown[0]} is not one of its label "
                              f"files' ids {sorted(allowed)}")


def scoring_rule(benchmark: Benchmark, granularity: str) -> str:
    """One sentence: how instants and predictions are matched, and how flexdet eval's stream schedule differs."""
    tolerance = benchmark.time_tol_us / 1000
    if not tolerance:
        matched = "with the predictions stamped exactly at it"
    elif granularity == "sequence":
        matched = f"with every prediction within {tolerance:g} ms of it pooled (the Prophesee toolbox's rule)"
    else:
        matched = f"with the predictions of the one time nearest to it within {tolerance:g} ms (RVT's validation rule)"
    empty = ("instants left without ground truth by the filter are scored too" if benchmark.score_empty_instants
             else "instants left without ground truth by the filter are not scored")
    return (f"each labelled instant of the label files is one image, scored {matched}; {empty}. flexdet eval's "
            f"stream schedule instead scores every step of a continuous stream at its rate (on synthetic data against "
            f"the dense 1 ms ground truth, so between label instants too), so its AP differs from this one")


def prediction_files(folder: Path, labels_root: Path, labels: LabelFiles, split: str) -> list[Path]:
    """`folder/<sequence>.npy` of each labelled sequence; a folder holding the labels, a missing file or a file
    of no labelled sequence is an error."""
    from flexdet.errors import ConfigError
    from flexdet.evaluation.results import RATE_FOLDER

    if not folder.is_dir():
        raise ConfigError(f"--predictions {folder}: folder not found")
    label_folders = {labels_root.resolve()} | {path.parent.resolve() for path in labels.files.values()}
    if folder.resolve() in label_folders:
        raise ConfigError(f"--predictions {folder} is a folder of the labels (--labels {labels_root}); predictions "
                          f"are scored against the labels, never read from them")
    entries = sorted(folder.iterdir())
    files = {path.name: path for path in entries if path.name.endswith(".npy")}
    missing = [name for name in labels.files if f"{name}.npy" not in files]
    if missing:
        rates = [path.name for path in entries if RATE_FOLDER.fullmatch(path.name) and path.is_dir()]
        hint = ""
        if rates:
            hint = (f"; it holds the rate folders {', '.join(rates)} (flexdet eval's predictions/<rate>hz): pick one "
                    f"rate folder, e.g. --predictions {folder / rates[0]}")
        elif any(f"{name}_bbox.npy" in files for name in missing):
            hint = ("; <sequence>_bbox.npy is a label file's name, and label files are never read as predictions "
                    "(flexdet eval's prophesee/<rate>hz export is for the Prophesee toolbox: score its "
                    "predictions/<rate>hz)")
        raise ConfigError(f"--predictions {folder}: no <sequence>.npy for {len(missing)} of the {len(labels.files)} "
                          f"labelled sequence(s) of split {split!r}: {', '.join(missing[:5])}"
                          f"{' ...' if len(missing) > 5 else ''}{hint}")
    extra = sorted(set(files) - {f"{name}.npy" for name in labels.files})
    if extra:
        raise ConfigError(f"--predictions {folder}: {len(extra)} .npy file(s) belong to no labelled sequence of split "
                          f"{split!r}: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''} (remove them, or "
                          f"score the split they belong to)")
    return [files[f"{name}.npy"] for name in labels.files]


def read_predictions(path: Path) -> np.ndarray:
    """Prediction rows of any box dtype, by field name, bounded by the file; a score field is required."""
    from flexdet.data.labels import field_sources, load_rows, normalise_boxes
    from flexdet.errors import FormatError

    rows = load_rows(path)
    if "class_confidence" not in field_sources(path, rows.dtype, known_only=True):
        raise FormatError(path, f"predictions need a score field (class_confidence), have {list(rows.dtype.names)}")
    return normalise_boxes(path, rows, known_only=True)
