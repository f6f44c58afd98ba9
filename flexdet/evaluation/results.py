"""Evaluation outputs: prediction files in the label files' format, metrics as JSON / Markdown, AP-vs-rate plot,
and the same predictions for other tools (the Prophesee toolbox's box files, COCO json).

Layout of a run folder: `predictions/<rate>hz/<sequence>.npy` (`predictions/empty/` for the empty-window
delta) in the dtype and class ids of the sequence's label file, `prophesee/<rate>hz/<sequence>_bbox.npy`
(the toolbox's BBOX_DTYPE, named like Gen1 / 1Mpx label files so its psee_evaluator pairs them),
`coco/<rate>hz/{ground_truth,results}.json` (exactly the images a benchmark scored), `metrics.json`,
`metrics.md`, `ap_vs_rate.png`. Every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from flexdet.atomic import atomic_path, atomic_write_text
from flexdet.data.boxes import BOX_DTYPE, FILE_BOX_DTYPE
from flexdet.data.labels import field_sources
from flexdet.datasets.ground_truth import format_rate
from flexdet.errors import ConfigError, FlexdetError, FormatError
from flexdet.evaluation.coco_eval import METRIC_NAMES, PredictionRows, coco_dataset, predictions_as_boxes

PathLike = Union["os.PathLike[str]", str]

# The Prophesee toolbox's box dtype (src/io/box_loading.py BBOX_DTYPE), which RVT and DAGr write too:
# track_id comes BEFORE class_confidence, so box arrays must be converted by field name, never by position.
PROPHESEE_BOX_DTYPE = np.dtype({"names": ["t", "x", "y", "w", "h", "class_id", "track_id", "class_confidence"],
                                "formats": ["<i8", "<f4", "<f4", "<f4", "<f4", "<u4", "<u4", "<f4"],
                                "offsets": [0, 8, 12, 16, 20, 24, 28, 32], "itemsize": 40})
EXPORT_FORMATS = ("prophesee", "coco")
RATE_FOLDER = re.compile(r"[0-9][0-9.]*hz|empty")  # the folder names rate_folder writes


def detections_to_boxes(detections: Sequence[PredictionRows], timestamps: Sequence[int], scale: float = 1.0,
                        label_class_ids: Sequence[int] | None = None) -> np.ndarray:
    """Detections (one boxes/scores/labels dict per timestamp) -> BOX_DTYPE rows in the label files' frame
    and class ids, sorted by t.

    Boxes are multiplied by `scale` (a Benchmark's `scale`, 2 for DSEC-Det at half resolution); evaluated
    class k becomes `label_class_ids[k]` (`Benchmark.label_class_ids()`: DSEC 2-class car 0 -> 2); track_id 0.
    """
    if len(detections) != len(timestamps):
        raise FlexdetError(f"{len(detections)} detection sets but {len(timestamps)} timestamps")
    lookup = None if label_class_ids is None else np.asarray(label_class_ids, np.int64)
    parts = []
    for detection, t in zip(detections, timestamps):
        if int(t) < 0:
            raise FlexdetError(f"prediction time {int(t)} µs is negative; label files store unsigned times")
        boxes = predictions_as_boxes(detection).copy()
        boxes["t"] = int(t)
        boxes["track_id"] = 0
        for name in ("x", "y", "w", "h"):
            boxes[name] = boxes[name] * np.float32(scale)
        if lookup is not None and len(boxes):
            if int(boxes["class_id"].max()) >= len(lookup):
                raise FlexdetError(f"predicted class {int(boxes['class_id'].max())} but the benchmark has "
                                   f"{len(lookup)} classes")
            boxes["class_id"] = lookup[boxes["class_id"]]
        parts.append(boxes)
    merged = np.concatenate(parts) if parts else np.zeros(0, dtype=BOX_DTYPE)
    return merged[np.argsort(merged["t"], kind="stable")]


def boxes_as(boxes: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Box rows in another box dtype, field by field by name (Gen1's `ts` / `confidence` included); fields
    the source lacks are 0."""
    dtype = np.dtype(dtype)
    have = field_sources("box rows", boxes.dtype)
    out = np.zeros(len(boxes), dtype)
    for canonical, name in field_sources("box dtype", dtype).items():
        if canonical in have:
            out[name] = boxes[have[canonical]]
    return out


def label_file_dtype(path: PathLike) -> np.dtype:
    """The box dtype of a label file (`.npy`, or an `.npz` with 'labels'), read from its header only."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return archive["labels"].dtype
        return np.load(path, mmap_mode="r", allow_pickle=False).dtype
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(path, f"cannot read the label dtype ({exc})") from None


def sequence_label_dtype(sequence: Any) -> np.dtype:
    """The dtype of a sequence's label file (DSEC-Det tracks.npy, Gen1/1Mpx `<name>_bbox.npy`, RVT
    labels.npz), found from its `path` and `name`; flexdet's FILE_BOX_DTYPE when it has none."""
    from flexdet.data.readers.rvt import LABELS_RELATIVE

    path = Path(sequence.path)
    for candidate in (path / "object_detections" / "left" / "tracks.npy", path / LABELS_RELATIVE,
                      path.with_name(f"{sequence.name}_bbox.npy")):
        if candidate.is_file():
            return label_file_dtype(candidate)
    return FILE_BOX_DTYPE


def prediction_path(run_dir: PathLike, rate_hz: float | None, sequence: str) -> Path:
    """`run_dir/predictions/<rate>hz/<sequence>.npy` (`predictions/empty/...` when `rate_hz` is None)."""
    return Path(run_dir) / "predictions" / rate_folder(rate_hz) / f"{_plain(sequence)}.npy"


def write_predictions(run_dir: PathLike, rate_hz: float | None, sequence: str, boxes: np.ndarray,
                      dtype: np.dtype = FILE_BOX_DTYPE) -> Path:
    """Save predictions (box rows in the label frame and ids) in `dtype`, the dtype of the sequence's label
    file, atomically where prediction_path says; returns the path."""
    return _save(prediction_path(run_dir, rate_hz, sequence), boxes, dtype, sequence)


def write_prophesee_predictions(run_dir: PathLike, rate_hz: float | None, sequence: str,
                                boxes: np.ndarray) -> Path:
    """Save predictions in the Prophesee toolbox's BBOX_DTYPE as `prophesee/<rate>hz/<sequence>_bbox.npy`."""
    path = Path(run_dir) / "prophesee" / rate_folder(rate_hz) / f"{_plain(sequence)}_bbox.npy"
    return _save(path, boxes, PROPHESEE_BOX_DTYPE, sequence)


def write_coco_json(folder: PathLike, gt_frames: Sequence[np.ndarray], pred_frames: Sequence[PredictionRows],
                    class_names: Sequence[str], height: int, width: int) -> dict[str, Path]:
    """`ground_truth.json` (images, annotations, categories) and `results.json` (detections) of the scored
    frames, for pycocotools or any COCO tool: frame i is image i + 1, class k is category k + 1."""
    dataset, results = coco_dataset(gt_frames, pred_frames, range(len(class_names)), height, width)
    for category in dataset["categories"]:
        category["name"] = str(class_names[category["id"] - 1])
    folder = Path(folder)
    paths = {"ground_truth": folder / "ground_truth.json", "results": folder / "results.json"}
    atomic_write_text(paths["ground_truth"], json.dumps(dataset) + "\n")
    atomic_write_text(paths["results"], json.dumps([{k: v for k, v in r.items() if k != "area"} for r in results])
                      + "\n")
    return paths


def _save(path: Path, boxes: np.ndarray, dtype: np.dtype, sequence: str) -> Path:
    if boxes.dtype.names is None or not {"x", "y", "w", "h", "class_id"} <= set(boxes.dtype.names):
        raise FlexdetError(f"predictions for {sequence} must be box rows, got dtype {boxes.dtype}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, boxes_as(boxes, dtype))
    return path


def rate_folder(rate_hz: float | None) -> str:
    """`<rate>hz` without trailing zeros, `empty` for the empty-window delta (rate None)."""
    return "empty" if rate_hz is None else f"{format_rate(rate_hz)}hz"


def _plain(sequence: str) -> str:
    if not sequence or Path(sequence).name != sequence or sequence in (".", ".."):
        raise ConfigError(f"sequence name {sequence!r} must be a plain file name")
    return sequence


def write_metrics_json(path: PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Metric rows as a JSON list of objects; nan (no ground truth) is written as null."""
    clean = [{key: _json_value(value) for key, value in row.items()} for row in rows]
    atomic_write_text(path, json.dumps(clean, indent=2) + "\n")


def metrics_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of the rows; AP metrics are shown in percent with two decimals, nan as '-'."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(name, row.get(name)) for name in columns) + " |")
    return "\n".join(lines) + "\n\nAP metrics in % (COCO, pycocotools).\n"


def write_metrics_markdown(path: PathLike, rows: Sequence[Mapping[str, Any]],
                           columns: Sequence[str] | None = None) -> None:
    """Write metrics_markdown(rows) atomically."""
    atomic_write_text(path, metrics_markdown(rows, columns))


def plot_ap_vs_rate(path: PathLike, rows: Sequence[Mapping[str, Any]], model_key: str = "model",
                    rate_key: str = "rate_hz") -> None:
    """PNG of AP and AP50 (%) against detection rate, one line per model; rows without a rate are skipped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series: dict[str, list[tuple[float, float, float]]] = {}
    for row in rows:
        rate = row.get(rate_key)
        if rate is None or not math.isfinite(float(rate)):
            continue
        series.setdefault(str(row.get(model_key, "model")), []).append(
            (float(rate), _percent(row.get("AP")), _percent(row.get("AP50"))))
    if not series:
        raise FlexdetError(f"no metric row has a numeric '{rate_key}'; nothing to plot")
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharex=True)
    rates = sorted({point[0] for points in series.values() for point in points})
    for column, (axis, metric) in enumerate(zip(axes, ("AP", "AP50"))):
        for model, points in series.items():
            points = sorted(points)
            axis.plot([p[0] for p in points], [p[1 + column] for p in points], marker="o", label=model)
        axis.set_xscale("log")
        axis.set_xticks(rates, [format_rate(rate) for rate in rates])
        axis.minorticks_off()
        axis.set_xlabel("detection rate (Hz)")
        axis.set_ylabel(f"{metric} (%)")
        axis.grid(True, alpha=0.3)
    axes[0].legend()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def write_results(run_dir: PathLike, rows: Sequence[Mapping[str, Any]], model_key: str = "model",
                  rate_key: str = "rate_hz") -> dict[str, Path]:
    """metrics.json, metrics.md and (when some row has a rate) ap_vs_rate.png in `run_dir`; their paths."""
    run_dir = Path(run_dir)
    paths = {"json": run_dir / "metrics.json", "markdown": run_dir / "metrics.md"}
    write_metrics_json(paths["json"], rows)
    write_metrics_markdown(paths["markdown"], rows)
    if any(row.get(rate_key) is not None for row in rows):
        paths["plot"] = run_dir / "ap_vs_rate.png"
        plot_ap_vs_rate(paths["plot"], rows, model_key, rate_key)
    return paths


def _json_value(value: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, nan and inf to null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _percent(value: Any) -> float:
    """A [0, 1] metric in percent; missing -> nan (a gap in the plot)."""
    return math.nan if value is None else 100.0 * float(value)


def _cell(name: str, value: Any) -> str:
    """One Markdown table cell."""
    if value is None:
        return "-"
    if name in METRIC_NAMES:
        number = float(value)
        return "-" if math.isnan(number) else f"{100.0 * number:.2f}"
    if isinstance(value, float):
        return format_rate(value)
    return str(value)
