"""`flexdet eval --schedule interframe` under FlexEvent's rule against FlexEvent's own test_interframe.py
(tests/fixtures/flexevent_interframe: two DSEC-layout sequences and what FlexEvent's code, DylanOrange/flexevent
11471d3, did on them for every offset of np.linspace(0, 50_000, 10) in its 2-class and 8-class modes, its network
replaced by a stub returning fixed predictions; the script that made it is beside it).

Checked: the kept frame pairs, the windows (and hashed sub-windows) each step sees in order, the model inputs of
both views bit for bit, the frame, where the recurrent state is reset, the interpolated labels, and the COCO metrics
FlexEvent's evaluator gave for the same predictions (to 1e-12)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from flexdet.convert.flexevent import input_spec
from flexdet.datasets.benchmarks import get_benchmark
from flexdet.datasets.ground_truth import interframe_deltas, interframe_targets
from flexdet.datasets.sequences import open_dataset
from flexdet.evaluation.evaluate import (
    ScoredRun,
    interframe_offset_us,
    interframe_pairs,
    interframe_rule,
    interframe_runs,
    interframe_targets_of,
    interframe_windows,
    score,
)
from flexdet.evaluation.model_data import _flexevent_benchmark
from flexdet.evaluation.stream import StreamRunner, WindowReads, window_inputs

FIXTURE = Path(__file__).parent / "fixtures" / "flexevent_interframe"
MODES = {"2class": "flexevent2", "8class": "flexevent8"}
OFFSETS = np.linspace(0, 50_000, 10)
METRICS = {"AP": "AP", "AP50": "AP_50", "AP75": "AP_75", "APs": "AP_S", "APm": "AP_M", "APl": "AP_L"}


def digest(array: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest().encode()


@pytest.fixture(scope="module")
def official():
    return dict(np.load(FIXTURE / "flexevent_interframe.npz"))


@pytest.fixture(scope="module")
def datasets():
    opened = {mode: open_dataset(FIXTURE / "dsec", "test", benchmark=name) for mode, name in MODES.items()}
    yield opened
    for dataset in opened.values():
        dataset.close()


def steps(official, mode: str, j: int, sequence: str) -> np.ndarray:
    """Indices of FlexEvent's (unpadded) steps of `sequence`, in the order its loop took them."""
    prefix = f"{mode}__{j}__"
    return np.flatnonzero((official[prefix + "sequence"] == sequence) & ~official[prefix + "padded"])


def frame_rows(official, mode: str, j: int, key: str, step: int) -> np.ndarray:
    """The `key` rows (labels, predictions, detections) FlexEvent scored for its step `step`."""
    prefix = f"{mode}__{j}__"
    frame = int(np.flatnonzero(official[prefix + "step"] == step)[0])
    return official[prefix + key][official[prefix + key + "_frame"] == frame]


def test_flexevents_loop_resets_the_state_only_at_a_sequences_first_pair(official):
    """What FlexEvent's Module did with the stub's state (the reading flexdet's rule follows): it reaches every step
    having seen all earlier steps of its sequence, across chunks of sequence_length and padding, and starts over at
    each sequence; each sequence's steps are its kept pairs, in order."""
    for mode in MODES:
        for j in range(len(OFFSETS)):
            prefix = f"{mode}__{j}__"
            names, seen = official[prefix + "sequence"], official[prefix + "state_steps"]
            padded = official[prefix + "padded"]
            current, count = None, 0
            for k in range(len(names)):
                if not padded[k] and names[k] != current:
                    current, count = names[k], 0
                expected = -1 if k == 0 else count
                assert seen[k] == expected, (mode, j, k)
                count += 1
            for name in ("synth_000", "synth_001"):
                starts = official[prefix + "window_a"][steps(official, mode, j, name), 0]
                assert np.all(np.diff(starts) > 0) and len(starts) == len(official[f"{mode}__pairs__{name}"])
    assert len(official["2class__pairs__synth_001"]) > 11  # its stream spans two of FlexEvent's chunks


@pytest.mark.parametrize("mode", list(MODES))
def test_kept_pairs_windows_and_labels_equal_flexevents(official, datasets, mode):
    dataset = datasets[mode]
    spec = input_spec()
    checked = moved = 0
    for sequence in dataset.sequences:
        prepared, pairs = interframe_pairs(dataset.benchmark, sequence, "flexevent")
        np.testing.assert_array_equal(np.searchsorted(sequence.frame_times, pairs),
                                      official[f"{mode}__pairs__{sequence.name}"])
        for j, offset in enumerate(OFFSETS):
            prefix = f"{mode}__{j}__"
            assert official[prefix + "offset_us"] == interframe_offset_us(interframe_deltas()[j]) == offset
            chosen = steps(official, mode, j, sequence.name)
            starts, ends, reads = interframe_windows(pairs, offset)
            np.testing.assert_array_equal(np.stack([starts, ends], 1), official[prefix + "window_a"][chosen])
            np.testing.assert_array_equal(np.stack(spec.sub_windows(starts, ends, sequence=sequence.name), 1),
                                          official[prefix + "window_b"][chosen])
            np.testing.assert_array_equal(reads.float32_cuts, official[prefix + "timestamp"][chosen])
            for k, step in enumerate(chosen):
                theirs = frame_rows(official, mode, j, "labels", step)
                ours = interframe_targets(prepared, pairs[k:k + 1], offset)[0]
                assert len(ours) == len(theirs)
                for name in ("x", "y", "w", "h", "class_id"):
                    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=f"{mode} {j} {step} {name}")
                checked += len(ours)
                dagr = interframe_targets(prepared, pairs[k:k + 1], int(offset))[0]  # DAGr's int offset
                moved += int(any(np.any(dagr[n] != theirs[n]) for n in ("x", "y", "w", "h")))
    assert checked > 800 and moved > 50  # FlexEvent interpolates at the float offset


def test_model_inputs_equal_flexevents_bit_for_bit(official, datasets):
    """Both views of every step (2-class; the 8-class steps are the same windows), from FlexEvent's events_2x.h5.
    FlexEvent reads [t_i, t_i+1) through ms_to_idx and keeps `events["t"] < t_i + offset`, which torch compares in
    float32: without either rule some inputs differ."""
    dataset, spec = datasets["2class"], input_spec()
    variants = {"flexevent": 0, "no float32 cut": 0, "read grid at the window end": 0}
    total = 0
    for sequence in dataset.sequences:
        _, pairs = interframe_pairs(dataset.benchmark, sequence, "flexevent")
        for j, offset in enumerate(OFFSETS):
            prefix = f"2class__{j}__"
            chosen = steps(official, "2class", j, sequence.name)
            starts, ends, reads = interframe_windows(pairs, offset)
            built = {"flexevent": window_inputs(sequence, spec, starts, ends, reads),
                     "no float32 cut": window_inputs(sequence, spec, starts, ends,
                                                     WindowReads(reads.ends, np.full(len(ends), np.inf))),
                     "read grid at the window end": window_inputs(sequence, spec, starts, ends,
                                                                  WindowReads(ends, reads.float32_cuts))}
            for name, inputs in built.items():
                variants[name] += sum(digest(x[:20]) == a and digest(x[20:]) == b for x, a, b in
                                      zip(inputs, official[prefix + "digest_a"][chosen],
                                          official[prefix + "digest_b"][chosen]))
            total += len(chosen)
            assert built["flexevent"][:, :20].any() or j == 0
    assert variants["flexevent"] == total == 250
    assert variants["no float32 cut"] < total - 100 and variants["read grid at the window end"] < total - 10


class ReplayRuntime:
    """Stands in for the streaming runtime: checks that each run is one of FlexEvent's streams (a reset, then its
    steps' inputs and frames in order) and answers with the detections FlexEvent's evaluator was given."""

    def __init__(self, runs: list[list[dict]]) -> None:
        self.runs, self.current, self.frame = list(runs), None, None
        self.state = None

    def reset(self, batch_size: int = 1, sequence: str = "") -> None:
        assert batch_size == 1 and (self.current is None or not self.current), "a run ended early"
        self.current, self.frame = list(self.runs.pop(0)), None

    def set_window_us(self, window_us: int) -> None:
        pass

    def step_inputs(self, inputs: np.ndarray, frames: np.ndarray | None = None) -> list[dict]:
        expected = self.current.pop(0)
        if frames is not None:
            self.frame = frames[0]
        assert digest(inputs[0, :20]) == expected["digest_a"] and digest(inputs[0, 20:]) == expected["digest_b"]
        assert digest(self.frame[..., ::-1].transpose(2, 0, 1)) == expected["digest_image"]  # FlexEvent's BGR
        raw = expected["detections"]
        return [{"boxes": raw[:, :4], "scores": raw[:, 5], "labels": raw[:, 6].astype(np.int64)}]


def replay_runner(dataset, runs) -> StreamRunner:
    runner = object.__new__(StreamRunner)
    runner.spec, runner.benchmark, runner.runtime = input_spec(), dataset.benchmark, ReplayRuntime(runs)
    runner.uses_events, runner.uses_frames, runner._frame_cache, runner.window_us = True, True, None, 50_000
    return runner


@pytest.mark.parametrize("mode", list(MODES))
def test_interframe_schedule_gives_flexevents_metrics_on_the_same_predictions(official, datasets, mode):
    """interframe_runs under the flexevent rule, run as `flexdet eval` runs it (StreamRunner) with FlexEvent's
    stub predictions: same streams, same scored steps, same COCO metrics as FlexEvent's DSECEvaluator."""
    dataset = datasets[mode]
    per_offset: dict[int, list] = {j: [] for j in range(len(OFFSETS))}
    for sequence in dataset.sequences:
        expected = []
        for j in range(len(OFFSETS)):
            prefix = f"{mode}__{j}__"
            expected.append([{key: official[prefix + key][step] for key in ("digest_a", "digest_b", "digest_image")}
                             | {"detections": frame_rows(official, mode, j, "detections", step)}
                             for step in steps(official, mode, j, sequence.name)])
        runner = replay_runner(dataset, expected)
        runs = interframe_runs(runner, sequence, interframe_deltas(), "flexevent")
        assert not runner.runtime.runs and not runner.runtime.current
        for j, run in enumerate(runs.values()):
            per_offset[j].append(run)
            for gt, step in zip(run.gt, steps(official, mode, j, sequence.name), strict=True):
                theirs = frame_rows(official, mode, j, "labels", step)
                w, h = theirs["w"], theirs["h"]  # utils/evaluation/dsec.py _filter, downsample_by_2 false
                theirs = theirs[(theirs["t"] > 500_000) & (w ** 2 + h ** 2 >= 30 ** 2) & (w >= 10) & (h >= 10)]
                for name in ("x", "y", "w", "h", "class_id"):
                    np.testing.assert_array_equal(gt[name], theirs[name])
    for j, runs in per_offset.items():
        prefix = f"{mode}__{j}__"
        theirs = dict(zip(official[prefix + "metric_names"].tolist(), official[prefix + "metric_values"].tolist()))
        ours = score(runs, dataset.benchmark, [0] * len(runs))
        for name, their_name in METRICS.items():
            if theirs[their_name] == -1.0:  # pycocotools' "no ground truth in that range"; flexdet reports nan
                assert np.isnan(ours[name]), (mode, j, name)
            else:
                assert ours[name] == pytest.approx(theirs[their_name], abs=1e-12), (mode, j, name)
        assert 0.2 < ours["AP"] < 0.6


def test_flexevents_rules_decide_the_numbers(official, datasets):
    """The same predictions under DAGr's evaluator (dsec2) or DAGr's pair filter give other numbers, and the frame
    pair whose tracks are all below FlexEvent's evaluator filter is not scored."""
    dataset = datasets["2class"]
    sequence = next(s for s in dataset.sequences if s.name == "synth_000")
    flexevent_pairs = interframe_pairs(dataset.benchmark, sequence, "flexevent")[1]
    dagr_pairs = interframe_pairs(dataset.benchmark, sequence, "stream")[1]
    assert len(flexevent_pairs) == 10 and len(dagr_pairs) != len(flexevent_pairs)
    j = 3
    runs = []
    for seq in dataset.sequences:
        prepared, pairs = interframe_pairs(dataset.benchmark, seq, "flexevent")
        chosen = steps(official, "2class", j, seq.name)
        detections = [frame_rows(official, "2class", j, "detections", s) for s in chosen]
        detections = [{"boxes": d[:, :4], "scores": d[:, 5], "labels": d[:, 6].astype(np.int64)} for d in detections]
        for benchmark, bucket in ((dataset.benchmark, "flexevent2"), (get_benchmark("dsec2"), "dsec2")):
            targets = interframe_targets_of(benchmark, prepared, pairs, OFFSETS[j])
            runs.append((bucket, ScoredRun(pairs[:, 0], detections, targets, list(range(len(pairs))))))
        if seq.name == "synth_000":
            assert len(interframe_targets_of(dataset.benchmark, prepared, pairs[-1:], OFFSETS[j])[0]) == 0
    flexevent = score([r for b, r in runs if b == "flexevent2"], dataset.benchmark, [0, 0])
    dagr = score([r for b, r in runs if b == "dsec2"], get_benchmark("dsec2"), [0, 0])
    assert flexevent["AP"] == pytest.approx(float(official["2class__3__metric_values"][
        official["2class__3__metric_names"].tolist().index("AP")]), abs=1e-12)
    assert abs(dagr["AP"] - flexevent["AP"]) > 1e-3


def test_flexevent_benchmarks_and_defaults(tmp_path):
    two, eight = get_benchmark("flexevent2"), get_benchmark("flexevent8")
    assert two.class_names == ("car", "pedestrian") and two.class_map == get_benchmark("dsec2").class_map
    assert eight.num_classes == 7 and "train" not in eight.class_names
    box = np.zeros(4, dtype=[("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4")])
    box["t"] = [600_000, 600_000, 600_000, 500_000]
    box["w"], box["h"] = [18, 18, 10, 40], [24, 23.9, 40, 40]  # diagonal 30 exactly, just below, side 10, t 0.5 s
    assert two.filter_boxes(box).tolist() == box[:1].tolist() + box[2:3].tolist()
    assert two.filter_predictions and not get_benchmark("dsec2").filter_predictions
    with pytest.raises(Exception, match="flexevent2"):
        get_benchmark("flexevent3")
    spec = input_spec()
    assert interframe_rule("auto", spec) == "flexevent"
    assert interframe_rule("auto", dataclasses.replace(spec, sub_window="last_half")) == "stream"
    dsec = tmp_path / "dsec"
    (dsec / "test" / "seq" / "events" / "left").mkdir(parents=True)
    (dsec / "test" / "seq" / "events" / "left" / "events.h5").write_bytes(b"")
    for classes, name in ((2, "flexevent2"), (7, "flexevent8")):
        loaded = SimpleNamespace(spec=spec, model=SimpleNamespace(config=SimpleNamespace(num_classes=classes)))
        assert _flexevent_benchmark(loaded, dsec, "auto") == name
        assert _flexevent_benchmark(loaded, FIXTURE / "dsec", "auto") == "auto"  # synthetic layout: its own
    other = SimpleNamespace(spec=dataclasses.replace(spec, sub_window="last_half"),
                            model=SimpleNamespace(config=SimpleNamespace(num_classes=2)))
    assert _flexevent_benchmark(other, dsec, "auto") == "auto"
