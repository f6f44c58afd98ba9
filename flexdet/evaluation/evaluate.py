"""Evaluation at any detection rate: the schedules that run a model over a dataset through the stream driver, their
scoring (coco_eval, the benchmark's rules, ground_truth) and the prediction and result files (results).

- stream: each test sequence runs continuously at R Hz (windows tile time, step k ends at t0 + k/R, state
  carried, the frame branch re-encodes only when a newer frame exists at a window's start); every step
  with ground truth is scored: dense ground truth on synthetic data, the labelled instants otherwise.
- global: the same stream, scored only at the labelled instants (FlexEvent's 20 Hz "Global" evaluation at R = 20).
- interframe: DAGr's delta table (docs/benchmarks.md, "Interframe"). For each pair of consecutive frames whose
  tracks persist and each offset delta in linspace(0, 50 ms, 10), one step sees the events [t_i, t_i + delta) and
  the image at t_i, scored against the labels interpolated by track at t_i + delta. Two rules say where that
  step's recurrent state comes from (DAGr's network has none): "stream" (flexdet's), a 20 Hz stream from the
  sequence start carries the state to t_i and the step is forked from it; "flexevent" (FlexEvent's
  test_interframe.py), one stream per offset through the kept pairs' steps only, the state reset at the sequence
  start and carried from each pair's step to the next pair's, with FlexEvent's labels, pairs and event reads.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flexdet.data.clock import window_of
from flexdet.data.input_spec import InputSpec
from flexdet.datasets.benchmarks import Benchmark
from flexdet.datasets.cache import stream_windows
from flexdet.datasets.ground_truth import (
    InterframeDelta,
    format_rate,
    interframe_deltas,
    interframe_targets,
    persistent_pairs,
)
from flexdet.datasets.sequences import Dataset, Sequence
from flexdet.errors import ConfigError
from flexdet.evaluation.coco_eval import coco_metrics
from flexdet.evaluation.model_data import model_spec, open_model_dataset
from flexdet.evaluation.results import (
    EXPORT_FORMATS,
    detections_to_boxes,
    rate_folder,
    sequence_label_dtype,
    write_coco_json,
    write_predictions,
    write_prophesee_predictions,
    write_results,
)
from flexdet.evaluation.stream import StreamRunner, WindowReads
from flexdet.export.runtime.chains import chain_count
from flexdet.export.runtime.streaming import StreamingRuntime
from flexdet.models.checkpoint import load_model

SCHEDULES = ("stream", "interframe", "global", "chains")
INTERFRAME_RULES = ("stream", "flexevent")
# Prophesee's toolbox (and RVT) measure the 0.5 s skip from t = 0: every recording is taken to start there.
RECORDING_START_US = 0


@dataclass
class ScoredRun:
    """One (rate, sequence) run: every step's end time and detections, and which steps are scored."""

    times: np.ndarray
    detections: list[dict]
    gt: list[np.ndarray]
    scored: list[int]


def stream_runs(runner: StreamRunner, sequences: list[Sequence], rate_hz: float, dense: bool,
                chains: bool = False) -> list[ScoredRun]:
    """Stream the sequences (as one batch) at `rate_hz`; score every step with ground truth (dense) or only
    the labelled instants. `chains`: the phase-shifted schedule (`chain_count`), same output times."""
    windows = [stream_windows(s, rate_hz) for s in sequences]
    if chains:
        outputs = _chain_outputs(runner, sequences, [w[1] for w in windows], rate_hz)
    else:
        runner.set_window_us(window_of(rate_hz))
        outputs = runner.run_many(sequences, [w[0] for w in windows], [w[1] for w in windows])
    runs = []
    for sequence, (_, ends), detections in zip(sequences, windows, outputs):
        gt, scored = [], []
        if dense:
            for k, t in enumerate(ends.tolist()):
                if sequence.is_labelled(t):
                    gt.append(runner.benchmark.prepare_ground_truth(sequence.ground_truth(t), RECORDING_START_US))
                    scored.append(k)
        else:
            for t, k in _label_steps(sequence, ends, runner.benchmark.time_tol_us):
                gt.append(runner.benchmark.prepare_ground_truth(_labels_at(sequence, t), RECORDING_START_US))
                scored.append(k)
        runs.append(ScoredRun(ends, detections, gt, scored))
    return runs


def _chain_outputs(runner: StreamRunner, sequences: list[Sequence], ends: list[np.ndarray], rate_hz: float
                   ) -> list[list[dict]]:
    """The phase-shifted schedule: output k of a stream at `rate_hz` comes from chain k mod n (n =
    `chain_count`), a recurrent state stepped only at its own outputs on the trained window [t_k - window, t_k),
    so every step sees what training showed (the window and nearly its period, exactly at k x 20 Hz) whatever the
    output rate. Costs: one network step per output (as streaming at `rate_hz`), n states held, one step's
    latency. The chains run side by side as one batch; their outputs are interleaved back in time order."""
    window = runner.spec.window_us
    n = chain_count(rate_hz, window)
    runner.set_window_us(window)
    chained, chain_ends = [], []
    for sequence, times in zip(sequences, ends):
        for c in range(n):
            chained.append(sequence)
            chain_ends.append(times[c::n])
    outputs = runner.run_many(chained, [e - window for e in chain_ends], chain_ends)
    merged = []
    for i, times in enumerate(ends):
        detections: list[dict] = [{}] * len(times)
        for c in range(n):
            detections[c::n] = outputs[i * n + c]
        merged.append(detections)
    return merged


def _label_steps(sequence: Sequence, ends: np.ndarray, tolerance_us: int) -> list[tuple[int, int]]:
    """(label instant, step) pairs: each labelled instant is scored on the stream step ending nearest to it,
    when that is within the benchmark's time tolerance (Prophesee: 50 ms, so label times off the stream's grid
    are scored as RVT scores them; DSEC: 0, exact instants only). Stored windows (RVT data) pair each label
    frame with its own window, as RVT's loader does."""
    if sequence.stored is not None:
        return list(sequence.stored.label_steps)
    pairs = []
    if len(ends) == 0:
        return pairs
    for t in np.unique(sequence.labels["t"]).astype(np.int64).tolist():
        k = int(np.searchsorted(ends, t))
        candidates = [j for j in (k - 1, k) if 0 <= j < len(ends)]
        best = min(candidates, key=lambda j: abs(int(ends[j]) - t))
        if abs(int(ends[best]) - t) <= tolerance_us:
            pairs.append((t, best))
    return pairs


def _labels_at(sequence: Sequence, t: int) -> np.ndarray:
    from flexdet.datasets.ground_truth import labels_at

    return labels_at(sequence.labels, t)


def interframe_schedule(rates_hz: Seq[float] | None = None) -> list[InterframeDelta]:
    """The interframe deltas: all ten of DAGr's (rates None), or one per requested rate: DAGr's own delta where
    the rate is one of its (180, 90, 60 ... 20 Hz), else round(1e6 / rate) us; a delta beyond the 50 ms to the
    next frame (rate < 20 Hz) is refused."""
    dagr = interframe_deltas()
    if rates_hz is None:
        return dagr
    chosen = []
    for rate in rates_hz:
        known = [d for d in dagr if d.rate_hz is not None and abs(d.rate_hz - float(rate)) < 0.05]
        delta = known[0].delta_us if known else window_of(rate)
        if delta > dagr[-1].delta_us:
            raise ConfigError(f"interframe rate {rate} Hz: the events after a frame span at most "
                              f"{dagr[-1].delta_us // 1000} ms (20 Hz) before the next frame")
        chosen.append(known[0] if known else InterframeDelta(delta, float(rate), format_rate(rate)))
    return chosen


def interframe_offset_us(delta: InterframeDelta) -> float:
    """The offset (µs after the frame) a delta stands for: float(np.linspace(0, 50_000, 10)[k]) for DAGr's k-th delta
    (DAGr runs its int, FlexEvent's test_interframe.py the float), 1e6 / rate for another rate."""
    grid = np.linspace(0, 50_000, 10)
    for value in grid:
        if int(value) == delta.delta_us:
            return float(value)
    return 1e6 / float(delta.rate_hz) if delta.rate_hz else float(delta.delta_us)


def interframe_rule(rule: str, spec: InputSpec) -> str:
    """The interframe rule to run: `rule` itself, or for "auto" FlexEvent's for a model fed by FlexEvent's DSEC
    pipeline (its hashed sub-window: a converted FlexEvent checkpoint, `flexdet.convert.flexevent.input_spec`) and
    flexdet's stream rule otherwise."""
    if rule == "auto":
        return "flexevent" if spec.sub_window == "hashed" else "stream"
    if rule not in INTERFRAME_RULES:
        raise ConfigError(f"interframe rule must be auto or one of {INTERFRAME_RULES}, got {rule!r}")
    return rule


def interframe_pairs(benchmark: Benchmark, sequence: Sequence, rule: str = "stream") -> tuple[np.ndarray, np.ndarray]:
    """(labels, pairs): the sequence's labels in the evaluation frame, filtered as the rule's dataset filters them
    before pairing, and the (t_i, t_i+1) frame pairs whose tracks persist among them (`persistent_pairs`, IoU 0.1).

    stream (DAGr's run_test_interframe.py: min_bbox_diag 15, min_bbox_height 10): the benchmark's scored ground
    truth. flexevent (FlexEvent's DSEC class with config/dataset/dsec.yaml's min_bbox_diag 20, min_bbox_height 10,
    the filter it trains with): class map, crop, scale and clip as scored, then the benchmark's training filter."""
    if rule == "flexevent":
        boxes = benchmark.to_eval_frame(benchmark.map_classes(sequence.labels), benchmark.clip)
        prepared = boxes[benchmark.train_filter.keep(boxes)]
    else:
        prepared = benchmark.prepare_ground_truth(sequence.labels, RECORDING_START_US)
    return prepared, persistent_pairs(prepared, 0.1, sequence.frame_times)


def interframe_targets_of(benchmark: Benchmark, prepared: np.ndarray, pairs: np.ndarray, offset_us: float
                          ) -> list[np.ndarray]:
    """The ground truth scored for each pair at t_i + `offset_us`: the labels interpolated by track
    (`interframe_targets`; a float offset, FlexEvent's, interpolates at the float instant) through the benchmark's
    filter (DAGr filters the interpolated boxes again; FlexEvent's evaluator filters what it scores)."""
    return [benchmark.filter_boxes(boxes, RECORDING_START_US)
            for boxes in interframe_targets(prepared, pairs, offset_us)]


def interframe_runs(runner: StreamRunner, sequence: Sequence, deltas: Seq[InterframeDelta] | None = None,
                    rule: str = "auto") -> dict[float | None, ScoredRun]:
    """The interframe delta table for one sequence: one ScoredRun per delta (default DAGr's ten; keyed by its
    rate, None = the empty delta 0), under `rule` ("stream", "flexevent", "auto": `interframe_rule`)."""
    rule = interframe_rule(rule, runner.spec)
    prepared, pairs = interframe_pairs(runner.benchmark, sequence, rule)
    deltas = interframe_deltas() if deltas is None else list(deltas)
    runs = {d.rate_hz: ScoredRun(np.zeros(0, np.int64), [], [], []) for d in deltas}
    if len(pairs) == 0:
        return runs
    # DAGr runs int(offset); FlexEvent the float offset itself (its labels are interpolated at it, its window ends
    # at int(t_i + offset)).
    offsets = {d.rate_hz: interframe_offset_us(d) if rule == "flexevent" else float(d.delta_us) for d in deltas}
    targets = {rate: interframe_targets_of(runner.benchmark, prepared, pairs, offset) for rate, offset in offsets.items()}
    if rule == "flexevent":
        for d in deltas:
            runs[d.rate_hz] = _pair_stream(runner, sequence, pairs, offsets[d.rate_hz], targets[d.rate_hz])
        return runs
    pair_of_start = {int(t0): i for i, t0 in enumerate(pairs[:, 0])}
    starts, ends = stream_windows(sequence, 20)
    runner.set_window_us(50_000)
    collected = {d.rate_hz: ([], []) for d in deltas}

    def fork(i: int, state) -> None:
        t0 = int(pairs[i, 0])
        for d in deltas:
            index = runner.spec.frame_index(sequence.frame_times, t0, t0 + d.delta_us) if sequence.has_frames else -1
            collected[d.rate_hz][0].append(t0 + d.delta_us)
            collected[d.rate_hz][1].append((runner.step_from(sequence, state, t0, t0 + d.delta_us, index),
                                            targets[d.rate_hz][i]))

    def branch(k: int, state, frame_index) -> None:
        i = pair_of_start.get(int(ends[k]))
        if i is not None:
            fork(i, state)

    if int(pairs[0, 0]) == sequence.start_us:  # the stream's first step ends one window later: fork from a fresh state
        fork(0, None)
    runner.run(sequence, starts, ends, branch)
    for d in deltas:
        times, items = collected[d.rate_hz]
        runs[d.rate_hz] = ScoredRun(np.asarray(times, np.int64), [p for p, _ in items], [g for _, g in items],
                                    list(range(len(items))))
    return runs


def interframe_windows(pairs: np.ndarray, offset_us: float) -> tuple[np.ndarray, np.ndarray, WindowReads]:
    """FlexEvent's steps for one offset: (starts, ends) int64 µs of the windows [t_i, int(t_i + offset)) of the
    pairs in order, and how their events are read (`WindowReads`: up to the next frame t_i+1, float32 cut at
    t_i + offset)."""
    starts = np.asarray(pairs[:, 0], np.int64)
    instants = starts.astype(np.float64) + np.float64(offset_us)
    return starts, instants.astype(np.int64), WindowReads(np.asarray(pairs[:, 1], np.int64), instants)


def _pair_stream(runner: StreamRunner, sequence: Sequence, pairs: np.ndarray, offset_us: float,
                 targets: list[np.ndarray]) -> ScoredRun:
    """FlexEvent's rule for one offset: one stream through the pairs' windows only (`interframe_windows`), the
    state fresh at the first and carried from each pair's step to the next (modules/detection.py resets it at a
    sequence's first sample only), each step scored."""
    starts, ends, reads = interframe_windows(pairs, offset_us)
    runner.set_window_us(max(int(offset_us), 1))
    detections = runner.run(sequence, starts, ends, reads=reads)
    return ScoredRun(ends, detections, targets, list(range(len(pairs))))


def score(runs: Seq[ScoredRun], benchmark: Benchmark, recording_starts: Seq[int],
          coco_dir: str | Path | None = None) -> dict[str, float]:
    """COCO metrics over the scored steps of several runs, one image per step (RVT's validation feeds one
    element per labelled instant): predictions get the benchmark's prediction filter, and a step whose
    ground truth is all filtered out is not scored unless the benchmark scores empty instants. With
    `coco_dir`, the scored images are written there as COCO json."""
    gt_frames, pred_frames = [], []
    for run, start in zip(runs, recording_starts):
        for gt, k in zip(run.gt, run.scored):
            if len(gt) or benchmark.score_empty_instants:
                gt_frames.append(gt)
                pred_frames.append(_filtered(run.detections[k], int(run.times[k]), benchmark, start))
    width, height = benchmark.eval_size
    if coco_dir is not None:
        write_coco_json(coco_dir, gt_frames, pred_frames, benchmark.class_names, height, width)
    return coco_metrics(gt_frames, pred_frames, benchmark.num_classes, height, width)


def _filtered(detection: dict, t: int, benchmark: Benchmark, recording_start: int) -> np.ndarray:
    from flexdet.evaluation.coco_eval import predictions_as_boxes

    boxes = predictions_as_boxes(detection).copy()
    boxes["t"] = t
    return benchmark.filter_scored_predictions(boxes, recording_start)


def evaluate(model: torch.nn.Module, dataset: Dataset, rates_hz: Seq[float] | None, schedule: str = "stream",
             out_dir: str | Path | None = None, model_name: str = "model", progress: bool = True,
             spec: InputSpec | None = None, batch_size: int = 8, export: Seq[str] = (),
             interframe: str = "auto", frame_rule: str | None = None,
             runtime: StreamingRuntime | None = None) -> list[dict]:
    """Metric rows ({model, schedule, rate_hz, AP, AP50, ...}) of `model` on `dataset`; with `out_dir`, the
    predictions per rate and sequence (label files' frame, dtype and class ids) and the `export` formats
    ("prophesee": the toolbox's box files, "coco": the scored images as COCO json). `spec`: the model's input
    specification (default: the dataset's geometry, bins from the model). Stream schedules run `batch_size`
    sequences side by side. Interframe: one row per rate's delta (`interframe_schedule`; None: DAGr's ten) under
    the rule `interframe` (stream, flexevent or auto: `interframe_rule`). `frame_rule` (None: the specification's)
    pairs each window with a frame by another rule (`InputSpec.frame_rule`). `runtime`: the exported model's stepper
    (`load_runtime`) instead of `model` on torch, so a deployed graph is scored as it runs (stream and global
    schedules; one sequence at a time unless its graph takes a dynamic batch)."""
    from flexdet.progress import progress_bar

    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    unknown = sorted(set(export) - set(EXPORT_FORMATS))
    if unknown or (export and out_dir is None):
        raise ConfigError(f"export formats {list(export)}: choose from {EXPORT_FORMATS}, with an output folder")
    if schedule == "interframe" and not dataset.has_frames:
        raise ConfigError(f"{dataset.root}: the interframe schedule needs RGB frames (DSEC layout)")
    spec = model_spec(model, dataset, spec)
    if frame_rule is not None:
        spec = dataclasses.replace(spec, frame_rule=frame_rule)
    if runtime is not None:
        check_runtime_schedule(schedule)
        if not runtime.metadata.dynamic_batch:
            batch_size = 1
    runner = StreamRunner(model, spec, dataset.benchmark, runtime=runtime)
    streamable = dataset.stream_rates(rates_hz)
    if schedule != "interframe" and streamable != [float(r) for r in rates_hz]:
        rates_hz = streamable
        print(f"{dataset.root}: stored windows only, evaluated at {', '.join(f'{r:g}' for r in rates_hz)} Hz",
              file=sys.stderr)
    dense = schedule in ("stream", "chains") and all(s.dense is not None for s in dataset.sequences)
    per_rate: dict[float | None, list[ScoredRun]] = {}
    bar = progress_bar(total=len(dataset.sequences) * (1 if schedule == "interframe" else len(rates_hz)),
               desc=f"eval {model_name} ({schedule})", unit="run", disable=not progress)
    if schedule == "interframe":
        deltas = interframe_schedule(rates_hz)
        rule = interframe_rule(interframe, spec)
        delta_ms = {d.rate_hz: (interframe_offset_us(d) if rule == "flexevent" else d.delta_us) / 1000
                    for d in deltas}
        for sequence in dataset.sequences:
            for rate, run in interframe_runs(runner, sequence, deltas, rule).items():
                per_rate.setdefault(rate, []).append(run)
            bar.update(1)
    else:
        for rate in rates_hz:
            for lo in range(0, len(dataset.sequences), batch_size):
                chosen = dataset.sequences[lo:lo + batch_size]
                per_rate.setdefault(float(rate), []).extend(stream_runs(runner, chosen, rate, dense,
                                                                        schedule == "chains"))
                bar.update(len(chosen))
    bar.close()
    starts = [RECORDING_START_US] * len(dataset.sequences)
    rows = []
    for rate, runs in per_rate.items():
        coco_dir = Path(out_dir) / "coco" / rate_folder(rate) if "coco" in export else None
        metrics = score(runs, dataset.benchmark, starts, coco_dir)
        row = {"model": model_name, "schedule": schedule, "rate_hz": rate}
        if schedule == "interframe":  # the events span delta_ms after the frame; 0 = the frame alone
            row["delta_ms"] = delta_ms[rate]
            row["interframe_rule"] = rule
        if frame_rule is not None:
            row["frame_rule"] = spec.frame_rule
        if schedule == "chains":  # its cost beside its AP: states held (one step per output, as the stream)
            states = chain_count(rate, spec.window_us)
            row.update(states=states, state_kB=round(states * runner.state_bytes() / 1000, 1))
        rows.append({**row, "steps_scored": sum(len(r.scored) for r in runs), **metrics})
        if out_dir is not None:
            ids = dataset.benchmark.label_class_ids()
            for sequence, run in zip(dataset.sequences, runs):
                boxes = detections_to_boxes(run.detections, run.times, dataset.benchmark.scale, ids)
                write_predictions(out_dir, rate, sequence.name, boxes, sequence_label_dtype(sequence))
                if "prophesee" in export:
                    write_prophesee_predictions(out_dir, rate, sequence.name, boxes)
    return rows


def check_runtime_schedule(schedule: str) -> None:
    """An exported runtime is scored on the schedules that run one state per stream (stream, global): the others
    fork recurrent states, which evaluation does on the torch backend."""
    if schedule not in ("stream", "global"):
        raise ConfigError(f"the {schedule} schedule forks recurrent states, which eval does on the torch backend "
                          "only; score an exported runtime with --schedule stream or global")


def evaluate_checkpoint(checkpoint: str | Path, data_root: str | Path, rates_hz: Seq[float] | None,
                        schedule: str = "stream", out_dir: str | Path | None = None, split: str = "test",
                        model_name: str | None = None, progress: bool = True, benchmark: str | None = None,
                        export: Seq[str] = (), interframe: str = "auto", frame_rule: str | None = None,
                        backend: str = "torch") -> list[dict]:
    """Load any flexdet checkpoint, open `split` of the dataset the way it was trained (a training checkpoint's
    data settings; otherwise the layout's own benchmark: for a model fed by FlexEvent's DSEC pipeline on DSEC-Det,
    FlexEvent's flexevent2 / flexevent8), evaluate with the checkpoint's input specification, write results.
    `backend` other than torch: the model as deployed (`load_runtime(checkpoint, backend)`: an export folder's
    graph, its CPU model on a CPU with onnxruntime, or a graph exported on the fly)."""
    if backend != "torch":
        check_runtime_schedule(schedule)  # before a graph is loaded or exported for nothing
    loaded = load_model(checkpoint)
    dataset = open_model_dataset(loaded, checkpoint, data_root, split, benchmark)
    runtime = None
    try:
        if backend != "torch":
            from flexdet.export.runtime.loader import load_runtime

            runtime = load_runtime(checkpoint, backend=backend)
        name = model_name or (loaded.train_config or {}).get("model", {}).get("inputs", "model")
        rows = evaluate(loaded.model, dataset, rates_hz, schedule, out_dir, name, progress, loaded.spec, export=export,
                        interframe=interframe, frame_rule=frame_rule, runtime=runtime)
    finally:
        dataset.close()
        if runtime is not None:
            runtime.close()
    if out_dir is not None:
        write_results(out_dir, rows)
    return rows
