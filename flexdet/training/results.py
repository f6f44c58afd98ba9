"""Evaluation outputs: prediction files in the label files' format, metrics as JSON / Markdown, AP-vs-rate plot.

Layout of a run folder: `predictions/<rate>hz/<sequence>.npy` (`predictions/empty/` for the empty-window
delta), `metrics.json`, `metrics.md`, `ap_vs_rate.png`. Every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from flexdet.atomic import atomic_path, atomic_write_text
from flexdet.data.boxes import BOX_DTYPE, FILE_BOX_DTYPE
from flexdet.errors import ConfigError, FlexdetError
from flexdet.training.coco_eval import METRIC_NAMES, Frame, predictions_as_boxes
from flexdet.training.ground_truth import format_rate

PathLike = Union["os.PathLike[str]", str]


def detections_to_boxes(detections: Sequence[Frame], timestamps: Sequence[int], scale: float = 1.0) -> np.ndarray:
    """Detections (one boxes/scores/labels dict per timestamp) -> FILE_BOX_DTYPE rows sorted by t.

    Boxes are multiplied by `scale` to go back to the label files' frame (a Protocol's `scale`, 2 for
    DSEC-Det at half resolution); track_id is 0.
    """
    if len(detections) != len(timestamps):
        raise FlexdetError(f"{len(detections)} detection sets but {len(timestamps)} timestamps")
    parts = []
    for detection, t in zip(detections, timestamps):
        if int(t) < 0:
            raise FlexdetError(f"prediction time {int(t)} µs is negative; label files store unsigned times")
        boxes = predictions_as_boxes(detection).copy()
        boxes["t"] = int(t)
        boxes["track_id"] = 0
        for name in ("x", "y", "w", "h"):
            boxes[name] = boxes[name] * np.float32(scale)
        parts.append(boxes)
    merged = np.concatenate(parts) if parts else np.zeros(0, dtype=BOX_DTYPE)
    return merged[np.argsort(merged["t"], kind="stable")].astype(FILE_BOX_DTYPE)


def prediction_path(run_dir: PathLike, rate_hz: float | None, sequence: str) -> Path:
    """`run_dir/predictions/<rate>hz/<sequence>.npy` (`predictions/empty/...` when `rate_hz` is None)."""
    if not sequence or Path(sequence).name != sequence or sequence in (".", ".."):
        raise ConfigError(f"sequence name {sequence!r} must be a plain file name")
    folder = "empty" if rate_hz is None else f"{format_rate(rate_hz)}hz"
    return Path(run_dir) / "predictions" / folder / f"{sequence}.npy"


def write_predictions(run_dir: PathLike, rate_hz: float | None, sequence: str, boxes: np.ndarray) -> Path:
    """Save predictions (FILE_BOX_DTYPE or BOX_DTYPE rows) atomically where prediction_path says; returns it."""
    if boxes.dtype not in (FILE_BOX_DTYPE, BOX_DTYPE):
        raise FlexdetError(f"predictions for {sequence} must be box rows, got dtype {boxes.dtype}")
    path = prediction_path(run_dir, rate_hz, sequence)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, boxes.astype(FILE_BOX_DTYPE))
    return path


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
