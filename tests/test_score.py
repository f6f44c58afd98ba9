"""Benchmark scoring against the official code: the metrics RVT's evaluation (the Prophesee evaluator with
RVT's box filtering) computed for the peer fixtures, through the Python API and through `flexdet score`;
DSEC-Det files with the label file's class ids."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from flexdet.cli import main
from flexdet.data.boxes import BOX_DTYPE
from flexdet.datasets.benchmarks import get_benchmark
from flexdet.evaluation.benchmark_score import score_sequences
from flexdet.evaluation.coco_eval import METRIC_NAMES
from flexdet.evaluation.results import PROPHESEE_BOX_DTYPE, detections_to_boxes, write_predictions

CASES = Path("../shared/data/peers/prophesee_eval")
TOLERANCE = 1e-6


def load_case(name: str) -> dict:
    path = CASES / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"peer fixture {path} not available")
    with np.load(path) as case:
        data = {key: case[key] for key in case.files}
    count = int(data["num_sequences"])
    data["gt"] = [data[f"gt_{i:02d}"] for i in range(count)]
    data["dt"] = [data[f"dt_{i:02d}"] for i in range(count)]
    return data


def benchmark_of(case: dict):
    return get_benchmark("gen1" if str(case["camera"]) == "gen1" else "1mpx")


def assert_metrics(got: dict, expected: np.ndarray) -> None:
    """Official values (float64; -1 = no ground truth in that size range) against flexdet's (nan there)."""
    for name, value in zip(METRIC_NAMES, expected.tolist()):
        if value == -1:
            assert got[name] is None or math.isnan(got[name]), name
        else:
            assert abs(got[name] - value) <= TOLERANCE, (name, got[name], value)


@pytest.mark.parametrize("name", ["case_gen1", "case_1mpx", "case_gen1_hard"])
def test_python_api_reproduces_rvt_evaluation(name):
    case = load_case(name)
    benchmark = benchmark_of(case)
    assert case["skip_ts_us"] == benchmark.skip_us and case["time_tol_us"] == benchmark.time_tol_us
    assert (case["min_box_diag"], case["min_box_side"]) == (benchmark.eval_filter.min_diag,
                                                           benchmark.eval_filter.min_side)
    # RVT's validation path: one element per labelled instant (the benchmarks' default granularity).
    assert_metrics(score_sequences(benchmark, case["gt"], case["dt"]), case["metrics_f64"])
    # The toolbox over whole files: predictions within +-50 ms of an instant pooled.
    assert_metrics(score_sequences(benchmark, case["gt"], case["dt"], "sequence"), case["metrics_per_sequence_f64"])
    if "metrics_ds2_f64" in case:  # RVT's own 1 Mpx evaluation at half resolution
        assert_metrics(score_sequences(benchmark.downsampled(2), case["gt"], case["dt"]), case["metrics_ds2_f64"])


def test_hard_case_rules_each_matter():
    """Undoing any one official rule moves the hard case's AP off RVT's value."""
    case = load_case("case_gen1_hard")
    gen1 = get_benchmark("gen1")
    official = score_sequences(gen1, case["gt"], case["dt"])["AP"]
    assert abs(official - case["metrics_f64"][0]) <= TOLERANCE
    variants = {
        "t == 0.5 s kept": dataclasses.replace(gen1, skip_us=499_999),
        "ground truth clipped to the frame": dataclasses.replace(gen1, clip="frame"),
        "false positives of emptied instants counted": dataclasses.replace(gen1, score_empty_instants=True),
    }
    for rule, variant in variants.items():
        assert abs(score_sequences(variant, case["gt"], case["dt"])["AP"] - official) > 1e-4, rule
    # Read by position, track_id becomes the score (the value the fixture documents for that mistake).
    positional = [_by_position(dt) for dt in case["dt"]]
    assert abs(score_sequences(gen1, case["gt"], positional)["AP"] - 0.216205) < 1e-6


def test_predictions_stamped_off_the_label_instants_match_within_the_tolerance():
    # Label times are off the 50 ms grid; predictions made by a stream whose steps end 1.5 ms or 20 ms after
    # each label instant still belong to it: the same metrics as predictions stamped exactly. (Earlier stamps
    # would move the 500001 us instant's predictions before the 0.5 s skip, which filters them by their time.)
    case = load_case("case_gen1_hard")
    assert sum(int(np.sum(gt["t"] % 50_000 == 0)) for gt in case["gt"]) < 10  # almost nothing on the grid
    for shift in (1_500, 20_000):
        moved = [dt.copy() for dt in case["dt"]]
        for dt in moved:
            dt["t"] += shift
        assert_metrics(score_sequences(get_benchmark("gen1"), case["gt"], moved), case["metrics_f64"])


def _by_position(rows: np.ndarray) -> np.ndarray:
    """What a positional cast does: the 8 fields of the Prophesee dtype poured in order into BOX_DTYPE's."""
    out = np.zeros(len(rows), BOX_DTYPE)
    for source, target in zip(rows.dtype.names, BOX_DTYPE.names):
        out[target] = rows[source]
    return out


def write_case(case: dict, root: Path) -> tuple[Path, Path]:
    """Labels as `<sequence>_bbox.npy` (Gen1/1Mpx naming), predictions as `<sequence>.npy`, both in the
    Prophesee dtype exactly as the fixture holds them."""
    labels, predictions = root / "labels" / "test", root / "predictions"
    labels.mkdir(parents=True)
    predictions.mkdir()
    for name, gt, dt in zip(case["seq_names"].tolist(), case["gt"], case["dt"]):
        np.save(labels / f"{name}_bbox.npy", gt)
        np.save(predictions / f"{name}.npy", dt)
    return labels.parent, predictions


def run_score(capsys, *args: str) -> dict:
    assert main(["score", *args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out)[:len(METRIC_NAMES)] == list(METRIC_NAMES)
    return out


@pytest.mark.parametrize("name", ["case_gen1", "case_1mpx", "case_gen1_hard"])
def test_flexdet_score_reproduces_rvt_evaluation(name, tmp_path, capsys):
    case = load_case(name)
    root, predictions = write_case(case, tmp_path)
    benchmark = benchmark_of(case).name
    common = ["--benchmark", benchmark, "--labels", str(root), "--predictions", str(predictions)]
    assert_metrics(run_score(capsys, *common), case["metrics_f64"])
    # A folder of label files works as well as a dataset root (default split test).
    folder = ["--benchmark", benchmark, "--labels", str(root / "test"), "--predictions", str(predictions)]
    assert_metrics(run_score(capsys, *folder, "--granularity", "sequence"), case["metrics_per_sequence_f64"])
    if "metrics_ds2_f64" in case:
        assert_metrics(run_score(capsys, *common, "--downsample", "2"), case["metrics_ds2_f64"])


def test_flexdet_score_table_and_missing_predictions(tmp_path, capsys):
    case = load_case("case_gen1")
    root, predictions = write_case(case, tmp_path)
    args = ["score", "--benchmark", "gen1", "--labels", str(root), "--predictions", str(predictions)]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"AP    {100 * case['metrics_f64'][0]:.2f}" and lines[4] == "APs   -"
    next(predictions.iterdir()).unlink()
    assert main(args) == 2
    assert "no <sequence>.npy for 1 of the" in capsys.readouterr().err


def _dsec_rows(entries: list[tuple]) -> np.ndarray:
    """DSEC tracks.npy rows from (t, x, y, w, h, class_id) in the 640x480 sensor frame."""
    out = np.zeros(len(entries), dtype=[("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                                        ("class_id", "u1"), ("class_confidence", "<f4"), ("track_id", "<u4")])
    for i, entry in enumerate(entries):
        for key, value in zip(("t", "x", "y", "w", "h", "class_id"), entry):
            out[i][key] = value
    return out


def test_dsec_predictions_in_label_ids_score_through_an_official_root(tmp_path, capsys):
    # Sequence thun_01_a (test split) with a car (2), a bus (3, scored as car) and a pedestrian (0) at two
    # instants; a rider (1) is not scored in the 2-class benchmark.
    t0 = 1_600_000_000_000_000
    labels = _dsec_rows([(t0, 100, 100, 80, 60, 2), (t0, 300, 50, 120, 90, 3), (t0, 400, 200, 30, 80, 0),
                         (t0 + 50_000, 100, 100, 80, 60, 2), (t0 + 50_000, 500, 300, 40, 40, 1)])
    sequence = tmp_path / "dsec" / "test" / "thun_01_a" / "object_detections" / "left"
    sequence.mkdir(parents=True)
    np.save(sequence / "tracks.npy", labels)
    # dsec-det's split names 13 test sequences; this root has one, so its own split file says so (a sequence
    # named but missing fails the command instead of being left out).
    (tmp_path / "dsec" / "train_val_test_split.yaml").write_text("train: []\nval: []\ntest: [thun_01_a]\n")
    # The detector's output at half resolution with evaluated ids (car 0, pedestrian 1), written by flexdet eval.
    dsec2 = get_benchmark("dsec2")
    half = lambda box: np.asarray(box, np.float32) / 2  # noqa: E731
    detections = [
        {"boxes": np.stack([half([100, 100, 180, 160]), half([300, 50, 420, 140]), half([400, 200, 430, 280])]),
         "scores": np.array([0.9, 0.8, 0.7]), "labels": np.array([0, 0, 1])},
        {"boxes": half([[100, 100, 180, 160]]), "scores": np.array([0.6]), "labels": np.array([0])},
    ]
    boxes = detections_to_boxes(detections, [t0, t0 + 50_000], dsec2.scale, dsec2.label_class_ids())
    path = write_predictions(tmp_path / "run", 20.0, "thun_01_a", boxes, labels.dtype)
    written = np.load(path)
    assert written.dtype == labels.dtype
    assert written["class_id"].tolist() == [2, 2, 0, 2]  # DSEC's car and pedestrian ids, as in tracks.npy
    assert written["class_confidence"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    out = run_score(capsys, "--benchmark", "dsec2", "--labels", str(tmp_path / "dsec"), "--predictions",
                    str(path.parent))
    assert out["AP"] == pytest.approx(1.0) and out["AP50"] == pytest.approx(1.0)
    # Scored as if the ids were evaluated ones (car 0 = pedestrian in DSEC), the cars would be lost.
    wrong = written.copy()
    wrong["class_id"] = [0, 0, 1, 0]
    assert score_sequences(dsec2, [labels], [wrong])["AP"] < 0.5


def test_prophesee_export_keeps_scores_and_ids(tmp_path):
    from flexdet.evaluation.results import write_prophesee_predictions

    boxes = detections_to_boxes([{"boxes": np.array([[1.0, 2.0, 11.0, 22.0]]), "scores": np.array([0.25]),
                                  "labels": np.array([1])}], [600_000], 1.0, [0, 1])
    path = write_prophesee_predictions(tmp_path, 20.0, "seq", boxes)
    assert path.name == "seq_bbox.npy" and path.parent.name == "20hz"
    loaded = np.load(path)
    assert loaded.dtype == PROPHESEE_BOX_DTYPE
    assert loaded["class_confidence"].tolist() == [0.25] and loaded["track_id"].tolist() == [0]
    assert (loaded["w"].tolist(), loaded["class_id"].tolist()) == ([10.0], [1])


def test_eval_exports_for_other_tools_agree_with_its_metrics(tmp_path):
    """`evaluate(..., export=["prophesee", "coco"])`: the toolbox box files hold the predictions file's rows,
    and pycocotools run on the COCO json alone gives the metrics flexdet reports."""
    import contextlib
    import io

    import torch
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from test_datasets import tiny_dataset

    from flexdet.datasets import open_dataset
    from flexdet.evaluation.evaluate import evaluate
    from flexdet.evaluation.results import label_file_dtype
    from flexdet.models import build_model

    dataset = open_dataset(tiny_dataset(tmp_path / "data"), "test", downsample=2)
    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=True, conf_thresh=0.05, max_detections=30).eval()
    with torch.no_grad():  # an untrained head that fires everywhere, so there are detections to export
        for name, parameter in model.named_parameters():
            if name.startswith(("head.obj_preds", "head.cls_preds")) and name.endswith("bias"):
                parameter.fill_(3.0)
    try:
        row = evaluate(model, dataset, [20.0], "global", tmp_path / "run", progress=False,
                       export=["prophesee", "coco"])[0]
        sequence = dataset.sequences[0]
    finally:
        dataset.close()
    tracks = sequence.path / "object_detections" / "left" / "tracks.npy"
    saved = np.load(tmp_path / "run" / "predictions" / "20hz" / f"{sequence.name}.npy")
    assert saved.dtype == label_file_dtype(tracks)
    assert set(saved["class_id"].tolist()) <= set(np.load(tracks)["class_id"].tolist())  # label file's ids
    exported = np.load(tmp_path / "run" / "prophesee" / "20hz" / f"{sequence.name}_bbox.npy")
    assert exported.dtype == PROPHESEE_BOX_DTYPE
    for name in ("t", "x", "y", "w", "h", "class_id", "class_confidence"):
        assert np.array_equal(exported[name], saved[name].astype(exported[name].dtype)), name
    coco = tmp_path / "run" / "coco" / "20hz"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco / "ground_truth.json"))
        evaluator = COCOeval(gt, gt.loadRes(str(coco / "results.json")), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert len(saved) > 0 and len(gt.getImgIds()) <= row["steps_scored"]
    for name, value in zip(METRIC_NAMES, evaluator.stats[:6]):
        assert (math.isnan(row[name]) and value == -1) or abs(row[name] - value) < 1e-9, name


def test_eval_protocol_flag_is_a_deprecated_alias_of_schedule(tmp_path, capsys):
    missing = str(tmp_path / "missing.pt")
    assert main(["eval", missing, "--data", str(tmp_path), "--protocol", "global"]) == 2
    err = capsys.readouterr().err
    assert "--protocol is deprecated, use --schedule" in err and "missing.pt" in err  # then the run proceeds
    assert main(["eval", missing, "--data", str(tmp_path), "--protocol", "stream", "--schedule", "global"]) == 2
    assert "disagree" in capsys.readouterr().err


def test_flexdet_score_reads_an_rvt_preprocessed_root(tmp_path, capsys):
    # RVT's own output (labels_v2/labels.npz per sequence): its labels as predictions score 1.
    root = Path("../shared/data/peers/rvt_preprocessed_gen1/rvt_output")
    if not root.is_dir():
        pytest.skip("peer fixtures not available")
    with np.load(root / "test" / "synth_002" / "labels_v2" / "labels.npz") as archive:
        labels = archive["labels"]
    assert labels.dtype.names == PROPHESEE_BOX_DTYPE.names  # track_id before class_confidence
    np.save(tmp_path / "synth_002.npy", labels)
    out = run_score(capsys, "--benchmark", "gen1", "--labels", str(root), "--predictions", str(tmp_path))
    assert out["AP"] == pytest.approx(1.0) and out["AP50"] == pytest.approx(1.0)
    worse = labels.copy()
    worse["x"] += 6
    np.save(tmp_path / "synth_002.npy", worse)
    assert run_score(capsys, "--benchmark", "gen1", "--labels", str(root), "--predictions", str(tmp_path))["AP"] < 0.9
