"""`flexdet score` refuses what is wrong (issue #26 findings 1-4, issue #30 item 3): non-finite or ill-fitting
values, ambiguous or unknown fields, label files offered as predictions, sequences that would be dropped, declared
sizes beyond the file, benchmarks that do not fit the labels; and it reads every layout flexdet writes."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml

from flexdet.cli import main
from flexdet.data.boxes import FILE_BOX_DTYPE
from flexdet.data.labels import read_boxes
from flexdet.datasets.benchmarks import get_benchmark
from flexdet.evaluation.benchmark_score import score_sequences

GEN1_DTYPE = np.dtype([("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1"),
                       ("confidence", "<f4"), ("track_id", "<u4")])
NAMES = ("seq_a", "seq_b")


def gen1_labels(seed: int, instants: int = 8, per_instant: int = 3) -> np.ndarray:
    """Gen1 label rows (fields ts / confidence) after the 0.5 s skip, every box large enough to be scored."""
    rng = np.random.default_rng(seed)
    n = instants * per_instant
    rows = np.zeros(n, GEN1_DTYPE)
    rows["ts"] = np.repeat(600_000 + 50_000 * np.arange(instants), per_instant)
    rows["x"], rows["y"] = rng.uniform(0, 240, n), rng.uniform(0, 190, n)
    rows["w"], rows["h"] = rng.uniform(30, 60, n), rng.uniform(25, 50, n)
    rows["class_id"] = rng.integers(0, 2, n)
    rows["confidence"] = 1
    return rows


def predictions_of(labels: np.ndarray, seed: int) -> np.ndarray:
    """Detections near the labels (some shifted off), scored, plus false positives: an AP strictly inside (0, 1)."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(len(labels) * 2, FILE_BOX_DTYPE)
    times = labels["ts"] if "ts" in labels.dtype.names else labels["t"]
    rows["t"] = np.concatenate([times, times])
    for field in ("x", "y", "w", "h", "class_id"):
        rows[field] = np.concatenate([labels[field], labels[field]])
    rows["x"][: len(labels)] += rng.normal(0, 4, len(labels)).astype(np.float32)
    rows["x"][len(labels):] += 35
    rows["class_confidence"] = rng.uniform(0.05, 1, len(rows))
    return rows[np.argsort(rows["t"], kind="stable")]


def gen1_case(tmp_path: Path) -> tuple[Path, Path]:
    """A Gen1 dataset root (test/<name>_bbox.npy) and a predictions folder (<name>.npy) for two sequences."""
    labels, predictions = tmp_path / "gen1" / "test", tmp_path / "predictions"
    labels.mkdir(parents=True)
    predictions.mkdir()
    for i, name in enumerate(NAMES):
        rows = gen1_labels(i)
        np.save(labels / f"{name}_bbox.npy", rows)
        np.save(predictions / f"{name}.npy", predictions_of(rows, 10 + i))
    return labels.parent, predictions


def score(capsys, *args: str) -> tuple[int, dict | None, str]:
    """Exit code, the JSON printed (None on failure) and stderr of `flexdet score ... --json`."""
    code = main(["score", *args, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


def gen1_score(capsys, labels: Path, predictions: Path, *extra: str) -> tuple[int, dict | None, str]:
    return score(capsys, "--benchmark", "gen1", "--labels", str(labels), "--predictions", str(predictions), *extra)


def test_clean_case_scores_strictly_between_0_and_1(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    code, out, err = gen1_score(capsys, labels, predictions)
    assert code == 0, err
    expected = score_sequences(get_benchmark("gen1"), [read_boxes(labels / "test" / f"{n}_bbox.npy") for n in NAMES],
                               [np.load(predictions / f"{n}.npy") for n in NAMES])
    assert 0.05 < out["AP"] < 0.95 and out["AP"] == pytest.approx(expected["AP"], abs=1e-12)


# --------------------------------------------------------------------------- 26.1: non-finite values


@pytest.mark.parametrize("field,value", [("x", np.nan), ("y", np.nan), ("w", np.inf), ("h", -np.inf),
                                         ("class_confidence", np.nan), ("class_confidence", np.inf)])
def test_non_finite_prediction_values_are_refused_naming_file_and_row(tmp_path, capsys, field, value):
    labels, predictions = gen1_case(tmp_path)
    rows = np.load(predictions / "seq_b.npy")
    rows[field][7] = value
    np.save(predictions / "seq_b.npy", rows)
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "seq_b.npy" in err and "row 7" in err and field in err, err


@pytest.mark.parametrize("field", ["w", "h", "x"])
def test_non_finite_label_values_are_refused_naming_file_and_row(tmp_path, capsys, field):
    labels, predictions = gen1_case(tmp_path)
    path = labels / "test" / "seq_a_bbox.npy"
    rows = np.load(path)
    rows[field][4] = np.nan
    np.save(path, rows)
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "seq_a_bbox.npy" in err and "row 4" in err and field in err, err


@pytest.mark.parametrize("field,dtype,value", [("class_id", "<i8", 258), ("class_id", "<i8", -1),
                                               ("x", "<f8", 1e39), ("t", "<f8", 1e30), ("t", "<f8", 6e5 + 0.5)])
def test_values_that_the_box_fields_cannot_hold_are_refused(tmp_path, capsys, field, dtype, value):
    """A class id of 258 would wrap to 2, a float64 x of 1e39 would become inf, a fractional time would be cut."""
    labels, predictions = gen1_case(tmp_path)
    rows = np.load(predictions / "seq_a.npy")
    descr = [(name, dtype if name == field else rows.dtype[name].str) for name in rows.dtype.names]
    wider = np.zeros(len(rows), descr)
    for name in rows.dtype.names:
        wider[name] = rows[name]
    wider[field][3] = value
    np.save(predictions / "seq_a.npy", wider)
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "seq_a.npy" in err and "row 3" in err and field in err, err


# --------------------------------------------------------------------------- 26.2: fields chosen by order


@pytest.mark.parametrize("extra", [("confidence", "<f4"), ("ts", "<u8"), ("class_conf", "<f4")])
def test_ambiguous_prediction_fields_are_refused(tmp_path, capsys, extra):
    labels, predictions = gen1_case(tmp_path)
    rows = np.load(predictions / "seq_a.npy")
    both = np.zeros(len(rows), rows.dtype.descr + [extra])
    for name in rows.dtype.names:
        both[name] = rows[name]
    both[extra[0]] = 0.5 if extra[1] == "<f4" else rows["t"] + 1
    np.save(predictions / "seq_a.npy", both)
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "seq_a.npy" in err and "ambiguous" in err and extra[0] in err, err


def test_ambiguous_label_fields_are_refused(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    path = labels / "test" / "seq_b_bbox.npy"
    rows = np.load(path)
    both = np.zeros(len(rows), rows.dtype.descr + [("t", "<u8")])
    for name in rows.dtype.names:
        both[name] = rows[name]
    np.save(path, both)
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "seq_b_bbox.npy" in err and "ambiguous" in err, err


def test_unknown_fields_are_refused(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    rows = np.load(predictions / "seq_a.npy")
    renamed = rows.astype([("score" if n == "class_confidence" else n, rows.dtype[n].str) for n in rows.dtype.names])
    np.save(predictions / "seq_a.npy", renamed)
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "seq_a.npy" in err and "score" in err, err


# --------------------------------------------------------------------------- 26.3: labels as predictions


def test_predictions_never_fall_back_to_label_files(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    for name in NAMES:  # _bbox.npy files carry a confidence field, so they would score as perfect predictions
        (predictions / f"{name}.npy").unlink()
        (predictions / f"{name}_bbox.npy").write_bytes((labels / "test" / f"{name}_bbox.npy").read_bytes())
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "_bbox.npy" in err and "label file" in err, err


@pytest.mark.parametrize("which", ["root", "split"])
def test_a_predictions_folder_that_is_the_labels_folder_is_refused(tmp_path, capsys, which):
    labels, _ = gen1_case(tmp_path)
    folder = labels if which == "root" else labels / "test"
    for name in NAMES:
        np.save(labels / "test" / f"{name}.npy", np.load(labels / "test" / f"{name}_bbox.npy"))
    code, _, err = gen1_score(capsys, labels, folder)
    assert code == 2 and "--predictions" in err and "labels" in err, err


# --------------------------------------------------------------------------- 26.4: nothing dropped silently


def dsec_rows(seed: int, instants: int = 6) -> np.ndarray:
    """DSEC tracks.npy rows (cars, id 2) large enough for dsec2's filter, in the 640x480 frame."""
    rng = np.random.default_rng(seed)
    n = instants * 2
    rows = np.zeros(n, FILE_BOX_DTYPE)
    rows["t"] = np.repeat(10**15 + 50_000 * np.arange(instants), 2)
    rows["x"], rows["y"] = rng.uniform(0, 500, n), rng.uniform(0, 300, n)
    rows["w"], rows["h"] = rng.uniform(60, 120, n), rng.uniform(40, 100, n)
    rows["class_id"] = 2
    rows["class_confidence"] = 1
    return rows


def dsec_case(tmp_path: Path, listed: tuple[str, ...] = ("zurich_a", "zurich_b")) -> tuple[Path, Path]:
    """A DSEC-Det labels root (test/<seq>/object_detections/left/tracks.npy, its own split file) + predictions."""
    root, predictions = tmp_path / "dsec", tmp_path / "dsec_predictions"
    predictions.mkdir()
    for i, name in enumerate(("zurich_a", "zurich_b")):
        folder = root / "test" / name / "object_detections" / "left"
        folder.mkdir(parents=True)
        rows = dsec_rows(i)
        np.save(folder / "tracks.npy", rows)
        np.save(predictions / f"{name}.npy", predictions_of(rows, i))
    (root / "train_val_test_split.yaml").write_text(yaml.safe_dump({"train": [], "val": [], "test": list(listed)}))
    return root, predictions


def dsec_score(capsys, root: Path, predictions: Path, benchmark: str = "dsec2") -> tuple[int, dict | None, str]:
    return score(capsys, "--benchmark", benchmark, "--labels", str(root), "--predictions", str(predictions))


def test_a_dsec_split_sequence_that_is_missing_fails_the_command(tmp_path, capsys):
    root, predictions = dsec_case(tmp_path, listed=("zurich_a", "zurich_b", "zurich_c"))
    code, _, err = dsec_score(capsys, root, predictions)
    assert code == 2 and "zurich_c" in err, err


def test_a_symlink_loop_in_place_of_a_sequence_fails_the_command(tmp_path, capsys):
    root, predictions = dsec_case(tmp_path)
    tracks = root / "test" / "zurich_b" / "object_detections" / "left" / "tracks.npy"
    tracks.unlink()
    os.symlink(tracks, tracks)  # a link to itself: is_file() is False, so it used to be skipped
    code, _, err = dsec_score(capsys, root, predictions)
    assert code == 2 and "zurich_b" in err, err


def test_extra_prediction_files_are_reported(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    np.save(predictions / "seq_c.npy", np.load(predictions / "seq_a.npy"))
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "seq_c.npy" in err, err


def test_all_labels_filtered_out_is_an_error_not_null_metrics(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    for name in NAMES:  # every box below Gen1's 30 px diagonal
        path = labels / "test" / f"{name}_bbox.npy"
        rows = np.load(path)
        rows["w"], rows["h"] = 12, 12
        np.save(path, rows)
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "no ground-truth box" in err, err


def test_json_states_the_sequences_and_box_counts_scored(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    code, out, err = gen1_score(capsys, labels, predictions)
    assert code == 0, err
    gen1 = get_benchmark("gen1")
    gt = [gen1.prepare_ground_truth(read_boxes(labels / "test" / f"{n}_bbox.npy")) for n in NAMES]
    assert out["sequences"] == list(NAMES)
    assert out["ground_truth_boxes"] == sum(len(g) for g in gt)
    assert out["prediction_rows"] == sum(len(np.load(predictions / f"{n}.npy")) for n in NAMES)
    assert out["instants"] == sum(len(np.unique(g["t"])) for g in gt)


# --------------------------------------------------------------------------- 26.7: bounded by the file


def test_an_npy_header_claiming_more_rows_than_the_file_holds_is_refused_without_allocating(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    path = predictions / "seq_a.npy"
    rows = np.load(path)
    header = np.lib.format.header_data_from_array_1_0(rows)
    header["shape"] = (10**12,)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(rows.tobytes())
    tracemalloc.start()
    try:
        code, _, err = gen1_score(capsys, labels, predictions)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2 and "seq_a.npy" in err and str(10**12) in err, err
    assert peak < 50 * 2**20


def test_a_million_prediction_rows_stay_within_a_few_times_the_file(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    rng = np.random.default_rng(0)
    rows = np.load(predictions / "seq_a.npy")
    many = rows[rng.integers(0, len(rows), 1_000_000)]
    many["class_confidence"] = rng.uniform(0, 1, len(many)).astype(np.float32)
    many = many[np.argsort(many["t"], kind="stable")]
    np.save(predictions / "seq_a.npy", many)
    size = (predictions / "seq_a.npy").stat().st_size
    tracemalloc.start()
    try:
        code, out, err = gen1_score(capsys, labels, predictions)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, err
    assert out["prediction_rows"] == len(many) + len(np.load(predictions / "seq_b.npy"))
    assert peak < 8 * size, (peak / 2**20, size / 2**20)


# --------------------------------------------------------------------------- 30.3: flexdet's own layouts


def quickstart_case(tmp_path: Path) -> tuple[Path, Path]:
    """A quickstart-style synthetic data folder (dataset.yaml, DSEC layout at 128x96, tracks.npy with DSEC ids)
    and `flexdet eval --out` predictions (predictions/<rate>hz/<seq>.npy) at two rates."""
    root, run = tmp_path / "data", tmp_path / "eval"
    names = ["seq_000", "seq_001"]
    manifest = {"layout": "dsec", "classes": {0: "pedestrian", 2: "car"}, "width": 128, "height": 96,
                "label_rate_hz": 20.0, "splits": {"train": [], "val": [], "test": names},
                "t_offsets": {name: 0 for name in names}}
    root.mkdir()
    (root / "dataset.yaml").write_text(yaml.safe_dump(manifest))
    rng = np.random.default_rng(3)
    for name in names:
        rows = np.zeros(20, FILE_BOX_DTYPE)
        rows["t"] = np.repeat(50_000 * np.arange(10), 2)
        rows["x"], rows["y"] = rng.uniform(0, 90, 20), rng.uniform(0, 60, 20)
        rows["w"], rows["h"] = rng.uniform(8, 30, 20), rng.uniform(8, 30, 20)
        rows["class_id"] = rng.choice([0, 2], 20)
        rows["class_confidence"] = 1
        folder = root / "test" / name / "object_detections" / "left"
        folder.mkdir(parents=True)
        np.save(folder / "tracks.npy", rows)
        for rate in ("20hz", "60hz"):
            (run / "predictions" / rate).mkdir(parents=True, exist_ok=True)
            np.save(run / "predictions" / rate / f"{name}.npy", predictions_of(rows, 5))
    return root, run / "predictions"


def test_score_reads_a_quickstart_data_folder_and_eval_predictions(tmp_path, capsys):
    root, predictions = quickstart_case(tmp_path)
    code, out, err = score(capsys, "--benchmark", "synthetic", "--labels", str(root), "--predictions",
                           str(predictions / "20hz"))
    assert code == 0, err
    assert out["sequences"] == ["seq_000", "seq_001"] and 0 < out["AP"] < 1
    assert "labelled instant" in out["rule"] and "flexdet eval" in out["rule"]  # which rule, and eval's difference
    assert "flexdet eval" in err  # said on the console too, not only in the JSON


def test_a_predictions_folder_above_the_rate_folders_says_to_pick_one(tmp_path, capsys):
    root, predictions = quickstart_case(tmp_path)
    code, _, err = score(capsys, "--benchmark", "synthetic", "--labels", str(root), "--predictions", str(predictions))
    assert code == 2 and "20hz" in err and "60hz" in err and "rate folder" in err, err


@pytest.mark.parametrize("benchmark", ["gen1", "1mpx"])
def test_a_prophesee_benchmark_on_dsec_labels_is_refused(tmp_path, capsys, benchmark):
    root, predictions = dsec_case(tmp_path)
    code, _, err = dsec_score(capsys, root, predictions, benchmark)
    assert code == 2 and "does not fit" in err and "dsec" in err, err


def test_a_dsec_benchmark_on_quickstart_labels_is_refused(tmp_path, capsys):
    root, predictions = quickstart_case(tmp_path)
    code, _, err = score(capsys, "--benchmark", "dsec2", "--labels", str(root), "--predictions",
                         str(predictions / "20hz"))
    assert code == 2 and "does not fit" in err and "128x96" in err and "synthetic" in err, err


def test_gen1_on_labels_with_one_megapixel_class_ids_is_refused(tmp_path, capsys):
    labels, predictions = gen1_case(tmp_path)
    path = labels / "test" / "seq_a_bbox.npy"
    rows = np.load(path)
    rows["class_id"][::3] = 5  # 1 Mpx's ids go up to 6; Gen1 has car 0 and pedestrian 1 only
    np.save(path, rows)
    code, _, err = gen1_score(capsys, labels, predictions)
    assert code == 2 and "does not fit" in err and "class id 5" in err, err


def test_keeping_each_images_best_100_per_class_gives_pycocotools_own_metrics():
    """COCOeval never looks past an image's 100 best detections of a class; dropping the rest first (how a million
    rows stay small) changes nothing, ties at the cut included."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from flexdet.data.boxes import BOX_DTYPE
    from flexdet.evaluation.coco_eval import coco_dataset, coco_metrics

    rng = np.random.default_rng(1)
    gt = np.zeros(6, BOX_DTYPE)
    gt["x"], gt["y"], gt["w"], gt["h"], gt["class_id"] = rng.uniform(0, 200, 6), rng.uniform(0, 150, 6), 40, 40, [0, 1] * 3
    dt = np.zeros(700, BOX_DTYPE)
    source = rng.integers(0, 6, 700)
    for field in ("x", "y", "w", "h", "class_id"):
        dt[field] = gt[field][source]
    dt["x"] += rng.normal(0, 6, 700).astype(np.float32)
    dt["class_confidence"] = rng.choice([0.2, 0.5, 0.7, 0.9], 700)  # many ties across the 100th place
    ours = coco_metrics([gt], [dt], 2, 240, 304)
    dataset, results = coco_dataset([gt], [dt], [0, 1], 240, 304)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        detections = coco.loadRes(results)
        for annotation, result in zip(detections.dataset["annotations"], results):
            annotation["area"] = result["area"]
        evaluator = COCOeval(coco, detections, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert len(results) == 700
    for name, value in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), evaluator.stats[:6]):
        assert (value == -1 and np.isnan(ours[name])) or ours[name] == value, name
