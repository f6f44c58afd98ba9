"""Evaluation outputs: prediction files round-trip, metrics JSON / Markdown, AP-vs-rate plot."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from flexdet.data.boxes import FILE_BOX_DTYPE
from flexdet.errors import ConfigError, FlexdetError
from flexdet.evaluation.results import (
    detections_to_boxes,
    metrics_markdown,
    plot_ap_vs_rate,
    prediction_path,
    write_metrics_json,
    write_predictions,
    write_results,
)

ROWS = [
    {"model": "global", "rate_hz": 20.0, "AP": 0.5952, "AP50": 0.81, "APs": math.nan},
    {"model": "global", "rate_hz": 180.0, "AP": 0.4694, "AP50": 0.70, "APs": math.nan},
    {"model": "global", "rate_hz": 90.0, "AP": 0.5560, "AP50": 0.77, "APs": math.nan},
    {"model": "flextune", "rate_hz": 20.0, "AP": 0.5816, "AP50": 0.80, "APs": 0.3},
    {"model": "flextune", "rate_hz": 180.0, "AP": 0.5264, "AP50": 0.75, "APs": 0.2},
    {"model": "flextune", "rate_hz": None, "AP": 0.3740, "AP50": 0.60, "APs": 0.1},
]


def test_detections_become_label_file_rows(tmp_path):
    detections = [
        {"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.5, 1.5, 4.5, 9.5]]),
         "scores": torch.tensor([0.9, 0.4]), "labels": torch.tensor([1, 0])},
        {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, dtype=np.int64)},
        {"boxes": np.array([[100.0, 50.0, 150.0, 70.0]]), "scores": np.array([0.75]), "labels": np.array([0])},
    ]
    timestamps = [1_100_000, 1_050_000, 1_000_000]
    predictions = detections_to_boxes(detections, timestamps, scale=2.0)
    path = write_predictions(tmp_path, 25.714, "zurich_city_12_a", predictions)
    assert path == tmp_path / "predictions" / "25.714hz" / "zurich_city_12_a.npy"
    loaded = np.load(path)
    assert loaded.dtype == FILE_BOX_DTYPE
    assert loaded["t"].tolist() == [1_000_000, 1_100_000, 1_100_000]  # sorted by time
    assert loaded["x"].tolist() == [200, 20, 1]
    assert loaded["y"].tolist() == [100, 40, 3]
    assert loaded["w"].tolist() == [100, 40, 8]
    assert loaded["h"].tolist() == [40, 80, 16]
    assert loaded["class_id"].tolist() == [0, 1, 0]
    np.testing.assert_allclose(loaded["class_confidence"], [0.75, 0.9, 0.4], rtol=1e-6)
    assert loaded["track_id"].tolist() == [0, 0, 0]
    assert [p.name for p in path.parent.iterdir()] == ["zurich_city_12_a.npy"]  # no temporary file left


def test_predictions_in_the_label_files_dtype_and_class_ids(tmp_path):
    # Gen1 label files name their fields ts / confidence; DSEC 2-class car (evaluated 0) is 2 in tracks.npy.
    from flexdet.data.synthetic.dataset import GEN1_BOX_DTYPE
    from flexdet.evaluation.results import boxes_as, label_file_dtype

    detections = [{"boxes": np.array([[1.0, 2.0, 5.0, 8.0], [0.0, 0.0, 4.0, 4.0]]), "scores": np.array([0.8, 0.3]),
                   "labels": np.array([0, 1])}]
    boxes = detections_to_boxes(detections, [50_000], 1.0, label_class_ids=[2, 0])
    assert boxes["class_id"].tolist() == [2, 0]
    np.save(tmp_path / "seq_bbox.npy", np.zeros(0, GEN1_BOX_DTYPE))
    assert label_file_dtype(tmp_path / "seq_bbox.npy") == GEN1_BOX_DTYPE
    loaded = np.load(write_predictions(tmp_path, 20, "seq", boxes, GEN1_BOX_DTYPE))
    assert loaded.dtype == GEN1_BOX_DTYPE
    assert loaded["ts"].tolist() == [50_000, 50_000] and loaded["confidence"].tolist() == pytest.approx([0.8, 0.3])
    assert boxes_as(loaded, FILE_BOX_DTYPE)["class_confidence"].tolist() == pytest.approx([0.8, 0.3])
    with pytest.raises(FlexdetError, match="2 classes"):
        detections_to_boxes([{"boxes": np.zeros((1, 4)), "scores": [0.5], "labels": [2]}], [0], 1.0, [2, 0])


def test_prediction_paths_name_rates_without_trailing_zeros(tmp_path):
    assert prediction_path(tmp_path, 20.0, "s") == tmp_path / "predictions" / "20hz" / "s.npy"
    assert prediction_path(tmp_path, 25.7, "s").parent.name == "25.7hz"
    assert prediction_path(tmp_path, 180, "s").parent.name == "180hz"
    assert prediction_path(tmp_path, None, "s").parent.name == "empty"
    with pytest.raises(ConfigError):
        prediction_path(tmp_path, 20, "../escape")


def test_bad_detections_are_refused():
    with pytest.raises(FlexdetError, match="timestamps"):
        detections_to_boxes([{"boxes": np.zeros((0, 4)), "scores": [], "labels": []}], [1, 2])
    with pytest.raises(FlexdetError, match="negative"):
        detections_to_boxes([{"boxes": np.zeros((0, 4)), "scores": [], "labels": []}], [-5])


def test_metrics_json_round_trips_with_nan_as_null(tmp_path):
    rows = [dict(row, sequences=np.int64(3)) for row in ROWS]
    write_metrics_json(tmp_path / "metrics.json", rows)
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert len(loaded) == len(ROWS)
    assert loaded[0] == {"model": "global", "rate_hz": 20.0, "AP": 0.5952, "AP50": 0.81, "APs": None,
                         "sequences": 3}
    assert loaded[5]["rate_hz"] is None and loaded[5]["APs"] == 0.1


def test_markdown_table():
    text = metrics_markdown(ROWS[:2] + ROWS[5:], columns=["model", "rate_hz", "AP", "APs"])
    lines = text.splitlines()
    assert lines[0] == "| model | rate_hz | AP | APs |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| global | 20 | 59.52 | - |"
    assert lines[3] == "| global | 180 | 46.94 | - |"
    assert lines[4] == "| flextune | - | 37.40 | 10.00 |"


def test_plot_is_a_valid_png(tmp_path):
    path = tmp_path / "ap.png"
    plot_ap_vs_rate(path, ROWS)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    image = cv2.imread(str(path))
    assert image is not None and image.shape[:2] == (432, 1080)  # 9 x 3.6 in at 120 dpi
    assert image.std() > 10  # not a blank canvas
    with pytest.raises(FlexdetError, match="nothing to plot"):
        plot_ap_vs_rate(tmp_path / "none.png", [{"model": "m", "AP": 0.5}])
    assert not (tmp_path / "none.png").exists()


def test_write_results_writes_all_three(tmp_path):
    paths = write_results(tmp_path / "run", ROWS)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["ap_vs_rate.png", "metrics.json", "metrics.md"]
    assert paths["markdown"].read_text().startswith("| model | rate_hz | AP | AP50 | APs |")
