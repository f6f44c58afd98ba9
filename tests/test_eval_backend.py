"""`flexdet eval --backend`: the model scored as deployed (the export's onnxruntime graph, its CPU model on a CPU)
gives the torch model's predictions and AP at every rate (issue #29: the CPU model's accuracy is the model's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_datasets import tiny_dataset
from test_trainer import TINY

from flexdet.cli import main as cli_main
from flexdet.evaluation.evaluate import evaluate_checkpoint
from flexdet.training.config import load_train_config
from flexdet.training.trainer import train

RATES = [20.0, 60.0]


@pytest.fixture(scope="module")
def cpu_export(tmp_path_factory) -> tuple[Path, Path]:
    data = tiny_dataset(tmp_path_factory.mktemp("backend_data"))
    run = tmp_path_factory.mktemp("backend_run") / "run"
    # a threshold of 1e-4 keeps the boxes of a model trained for a few steps, so there are detections to compare
    overrides = TINY + ["optim.steps=3", "model.options={conf_thresh: 0.0001}"]
    train(load_train_config(preset="quickstart", overrides=overrides), data, run)
    export = tmp_path_factory.mktemp("backend_export") / "export"
    assert cli_main(["export", str(run), "--out", str(export), "--target", "cpu"]) == 0
    return data, export


def test_the_cpu_model_scores_the_torch_models_predictions_and_ap_at_every_rate(cpu_export, tmp_path):
    data, export = cpu_export
    rows = {}
    for backend in ("torch", "onnxruntime"):
        rows[backend] = evaluate_checkpoint(export, data, RATES, out_dir=tmp_path / backend, progress=False,
                                            backend=backend)
    for torch_row, ort_row in zip(rows["torch"], rows["onnxruntime"]):
        assert torch_row["rate_hz"] == ort_row["rate_hz"] and torch_row["steps_scored"] == ort_row["steps_scored"]
        assert abs(torch_row["AP"] - ort_row["AP"]) <= 0.005  # issue #29: within 0.5 AP
    files = sorted((tmp_path / "torch" / "predictions").rglob("*.npy"))
    assert len(files) == len(RATES) * len([d for d in (data / "test").iterdir() if d.is_dir()])  # every rate, sequence
    boxes = 0
    for file in files:
        want = np.load(file)
        got = np.load(tmp_path / "onnxruntime" / file.relative_to(tmp_path / "torch"))
        assert len(got) == len(want) and np.array_equal(got["t"], want["t"])
        assert np.array_equal(got["class_id"], want["class_id"])
        for field in ("x", "y", "w", "h"):
            np.testing.assert_allclose(got[field], want[field], atol=0.05)
        boxes += len(want)
    assert boxes > 100  # a comparison of detections, not of empty files
    assert json.loads((export / "cpu.json").read_text())["model"] == "model_cpu.onnx"


def test_schedules_that_fork_states_are_refused_on_an_exported_runtime(cpu_export, tmp_path, capsys):
    data, export = cpu_export
    code = cli_main(["eval", str(export), "--data", str(data), "--rates", "20", "--backend", "onnxruntime",
                     "--schedule", "chains", "--out", str(tmp_path / "chains")])
    assert code == 2 and "torch backend only" in capsys.readouterr().err
