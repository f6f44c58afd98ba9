"""Evaluation runners: stream step times, predictions files, batched = sequential, COCO plumbing, interframe GT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_datasets import tiny_dataset

from flexdet.data.boxes import FILE_BOX_DTYPE, boxes_to_xyxy
from flexdet.datasets import open_dataset, stream_windows
from flexdet.datasets.ground_truth import interframe_deltas, labels_at
from flexdet.evaluation.evaluate import ScoredRun, evaluate, interframe_runs, score
from flexdet.evaluation.stream import StreamRunner
from flexdet.models import build_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tiny_dataset(tmp_path_factory.mktemp("eval_data"))
    data = open_dataset(root, "test", downsample=2)
    yield data
    data.close()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("nano", num_classes=2, use_frames=True, conf_thresh=0.1, max_detections=30).eval()


def test_stream_steps_land_on_label_times(dataset):
    sequence = dataset.sequences[0]
    t0 = sequence.start_us
    _, ends20 = stream_windows(sequence, 20)
    labels = np.unique(sequence.labels["t"]).astype(np.int64)
    assert set(labels[labels > t0].tolist()) <= set(ends20.tolist())
    _, ends90 = stream_windows(sequence, 90)
    k = np.arange(1, len(ends90) + 1)
    assert np.array_equal(ends90, t0 + np.floor(k * 1e6 / 90 + 0.5).astype(np.int64))


def test_batched_stream_equals_one_sequence_at_a_time(dataset, model):
    runner = StreamRunner(model, dataset.input_spec(), dataset.benchmark)
    sequences = dataset.sequences[:1] * 2
    windows = [stream_windows(s, 60) for s in sequences]
    windows[1] = (windows[1][0][:-5], windows[1][1][:-5])  # a shorter second stream
    together = runner.run_many(sequences, [w[0] for w in windows], [w[1] for w in windows])
    alone = runner.run(sequences[0], *windows[0])
    assert len(together[0]) == len(alone) and len(together[1]) == len(alone) - 5
    for a, b in zip(together[0], alone):
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)


def test_predictions_files_in_label_frame_and_dtype(dataset, model, tmp_path):
    rows = evaluate(model, dataset, [20.0, 90.0], "stream", tmp_path, "fusion", progress=False)
    assert [r["rate_hz"] for r in rows] == [20.0, 90.0] and all(r["model"] == "fusion" for r in rows)
    sequence = dataset.sequences[0]
    saved = np.load(tmp_path / "predictions" / "90hz" / f"{sequence.name}.npy")
    assert saved.dtype == FILE_BOX_DTYPE
    _, ends = stream_windows(sequence, 90)
    assert set(np.unique(saved["t"]).tolist()) <= set(ends.tolist())
    # The first step's detections, recomputed directly, times the benchmark scale (2) = the file's rows.
    runner = StreamRunner(model, dataset.input_spec(), dataset.benchmark)
    first = runner.run(sequence, *[w[:1] for w in stream_windows(sequence, 90)])[0]
    rows0 = saved[saved["t"] == ends[0]]
    np.testing.assert_allclose(boxes_to_xyxy(rows0), first["boxes"] * 2, atol=1e-3)
    assert rows[0]["steps_scored"] == sum(len(stream_windows(s, 20)[1]) for s in dataset.sequences)


def test_score_is_one_for_perfect_predictions_and_drops_when_shifted(dataset):
    sequence = dataset.sequences[0]
    times = np.unique(sequence.labels["t"])[2:8]
    gt = [dataset.benchmark.prepare_ground_truth(labels_at(sequence.labels, int(t)), sequence.start_us) for t in times]
    perfect = [{"boxes": boxes_to_xyxy(g), "scores": np.ones(len(g)), "labels": g["class_id"]} for g in gt]
    run = ScoredRun(times, perfect, gt, list(range(len(times))))
    assert score([run], dataset.benchmark, [sequence.start_us])["AP"] == pytest.approx(1.0)
    shifted = [{**p, "boxes": p["boxes"] + np.array([6, 0, 6, 0], np.float32)} for p in perfect]
    worse = score([ScoredRun(times, shifted, gt, run.scored)], dataset.benchmark, [sequence.start_us])
    assert worse["AP"] < 0.9


def test_interframe_ground_truth_is_interpolated_by_track(dataset, model):
    runner = StreamRunner(model, dataset.input_spec(), dataset.benchmark)
    sequence = dataset.sequences[0]
    runs = interframe_runs(runner, sequence)
    deltas = interframe_deltas()
    assert list(runs) == [d.rate_hz for d in deltas]
    half = deltas[5]  # 27 777 µs
    run = runs[half.rate_hz]
    assert len(run.gt) > 0 and len(run.detections) == len(run.gt)
    t0 = int(run.times[0]) - half.delta_us
    prepared = dataset.benchmark.prepare_ground_truth(sequence.labels, sequence.start_us)
    first, second = labels_at(prepared, t0), labels_at(prepared, t0 + 50_000)
    got = run.gt[0]
    for row in got:  # hand interpolation of each track between the frame pair
        a = first[first["track_id"] == row["track_id"]][0]
        b = second[second["track_id"] == row["track_id"]][0]
        ratio = half.delta_us / 50_000
        assert row["x"] == pytest.approx(a["x"] + (b["x"] - a["x"]) * ratio, abs=1e-3)
        assert row["w"] == pytest.approx(a["w"] + (b["w"] - a["w"]) * ratio, abs=1e-3)
    assert runs[None].times[0] == t0  # the empty window is scored at the frame time itself


def test_label_times_off_the_stream_grid_are_scored_on_the_nearest_step_within_the_tolerance():
    from types import SimpleNamespace

    from flexdet.evaluation.evaluate import _label_steps

    labels = np.zeros(4, FILE_BOX_DTYPE)
    labels["t"] = [101_500, 148_400, 230_000, 260_000]
    ends = np.array([50_000, 100_000, 150_000, 200_000, 250_000], np.int64)
    sequence = SimpleNamespace(labels=labels, stored=None)
    assert _label_steps(sequence, ends, 50_000) == [(101_500, 1), (148_400, 2), (230_000, 4), (260_000, 4)]
    assert _label_steps(sequence, ends, 0) == []  # DSEC: exact instants only
    assert _label_steps(sequence, ends, 5_000) == [(101_500, 1), (148_400, 2)]


def test_chains_interleave_phase_shifted_streams_on_the_trained_window(dataset):
    """At 40 Hz the chains schedule holds 2 states; the one stepped at 50, 100, ... ms is exactly a 20 Hz stream
    (same windows, same state), the other the same stream 25 ms later, and every output time is the 40 Hz grid."""
    from flexdet.evaluation.evaluate import stream_runs
    from flexdet.export.runtime.chains import chain_count

    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=True, conf_thresh=0.0, max_detections=30).eval()
    assert [chain_count(r, 50_000) for r in (20, 45, 90, 180)] == [1, 2, 4, 9]
    runner = StreamRunner(model, dataset.input_spec(), dataset.benchmark)
    sequence = dataset.sequences[0]
    chained = stream_runs(runner, [sequence], 40, dense=False, chains=True)[0]
    ends40 = stream_windows(sequence, 40)[1]
    assert np.array_equal(chained.times, ends40)
    starts20, ends20 = stream_windows(sequence, 20)
    assert np.array_equal(ends40[1::2], ends20)
    # the same two streams side by side (the batch the chains ran in): 25 ms-late 20 Hz, and 20 Hz itself
    late, on_time = runner.run_many([sequence] * 2, [ends40[0::2] - 50_000, starts20], [ends40[0::2], ends20])
    assert len(late) + len(on_time) == len(ends40) and sum(len(d["boxes"]) for d in on_time) > 0
    for got, want in ((chained.detections[0::2], late), (chained.detections[1::2], on_time)):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a["boxes"], b["boxes"])
            np.testing.assert_array_equal(a["scores"], b["scores"])


@pytest.mark.parametrize("rate", [60, 90])
def test_chained_runtime_equals_the_evaluated_chains_schedule(dataset, rate):
    """The deployable schedule (ChainedRuntime over the stepper, fed a camera's events and frames as the demo
    feeds them) gives the detections `flexdet eval --schedule chains` scores, with the freshest-frame rule."""
    import cv2

    from flexdet.evaluation.evaluate import stream_runs
    from flexdet.export.metadata import metadata_for_model
    from flexdet.export.runtime.chains import ChainedRuntime
    from flexdet.export.runtime.streaming import torch_runtime

    torch.manual_seed(1)
    model = build_model("nano", num_classes=2, use_frames=True, conf_thresh=0.0, max_detections=30).eval()
    spec = dataset.input_spec().replace(frame_rule="latest_before_end")
    sequence = dataset.sequences[0]
    evaluated = stream_runs(StreamRunner(model, spec, dataset.benchmark), [sequence], rate, dense=False,
                            chains=True)[0]
    runtime = ChainedRuntime(torch_runtime(model, metadata_for_model(model, spec), torch.device("cpu")), rate)
    assert runtime.count == round(rate / 20)
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in sorted(sequence.frame_dir.glob("*.png"))]
    recording, shown, boxes = sequence.recording(), None, 0
    for t_end, want in zip(evaluated.times.tolist(), evaluated.detections, strict=True):
        index = spec.frame_index(sequence.frame_times, t_end - spec.window_us, t_end)
        out = runtime.step(recording.read(t_end - spec.window_us, t_end), t_end,
                           images[index] if index != shown and index >= 0 else None)
        shown = index if index >= 0 else shown
        got, expected = out["boxes"], spec.boxes_to_sensor(want["boxes"])
        assert len(got) == len(expected)
        np.testing.assert_allclose(got, expected, atol=1e-3)
        np.testing.assert_allclose(out["scores"], want["scores"], atol=1e-5)
        boxes += len(got)
    assert boxes > 0


def test_chains_refuse_a_backend_that_holds_its_one_state_in_place(dataset, capsys):
    from flexdet.cli import main
    from flexdet.errors import ConfigError
    from flexdet.export.metadata import metadata_for_model
    from flexdet.export.runtime.chains import ChainedRuntime
    from flexdet.export.runtime.streaming import torch_runtime

    model = build_model("nano", num_classes=2, use_frames=False).eval()
    runtime = torch_runtime(model, metadata_for_model(model, dataset.input_spec()), torch.device("cpu"))
    runtime.backend._graph = object()  # what a CUDA-graph backend holds: its state buffers are the graph's
    with pytest.raises(ConfigError, match="CUDA graphs"):
        ChainedRuntime(runtime, 180)
    assert ChainedRuntime(runtime, 20).count == 1  # one state: nothing to switch
    assert main(["bench", "--model", "nano", "--backend", "onnxruntime", "--steps", "3", "--warmup", "1",
                 "--step-us", "5556", "--schedule", "chains", "--json"]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert report["states"] == 9 and report["schedule"] == "chains" and report["steps"] == 3
