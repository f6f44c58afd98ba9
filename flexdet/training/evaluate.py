"""Evaluation runners at any detection rate, producing predictions files and COCO metrics via the evaluation
core (coco_eval, protocols, ground_truth, results).

- stream: each test sequence runs continuously at R Hz (windows tile time, step k ends at t0 + k/R, state
  carried, the frame branch re-encodes only when a newer frame exists at a window's start); every step
  with ground truth is scored: dense ground truth on synthetic data, the labelled instants otherwise.
- global: the same stream, scored only at the labelled instants (the 20 Hz "Global" protocol at R = 20).
- interframe: DAGr / FlexEvent. A 20 Hz stream carries the state to each frame t_i of a persistent pair;
  from there one extra step sees the events [t_i, t_i + delta] and the image at t_i, scored against labels
  interpolated by track at t_i + delta, for the 10 deltas in linspace(0, 50 ms).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flexdet.errors import ConfigError
from flexdet.training.coco_eval import coco_metrics
from flexdet.training.datasets.cache import stream_windows, window_histograms
from flexdet.training.datasets.geometry import Geometry
from flexdet.training.datasets.sequences import Dataset, Sequence, open_dataset
from flexdet.training.ground_truth import interframe_deltas, interframe_targets, persistent_pairs
from flexdet.training.protocols import Protocol
from flexdet.training.results import detections_to_boxes, write_predictions, write_results

PROTOCOLS = ("stream", "interframe", "global")
CHUNK_STEPS = 128


@dataclass
class ScoredRun:
    """One (rate, sequence) run: every step's end time and detections, and which steps are scored."""

    times: np.ndarray
    detections: list[dict]
    gt: list[np.ndarray]
    scored: list[int]


def _to_numpy(detection: dict) -> dict:
    return {k: v.detach().float().cpu().numpy() if k != "labels" else v.cpu().numpy() for k, v in detection.items()}


class StreamRunner:
    """Runs one detector over sequences in the protocol's input geometry (batch of one, eval mode)."""

    def __init__(self, model: torch.nn.Module, protocol: Protocol, bins: int = 10,
                 device: torch.device = torch.device("cpu")) -> None:  # noqa: B008 (immutable)
        self.model = model.eval().to(device)
        self.protocol = protocol
        self.geometry = Geometry.from_protocol(protocol)
        self.bins = bins
        self.device = device
        self.uses_events = getattr(model.config, "use_events", True)
        self.uses_frames = model.config.use_frames

    @torch.inference_mode()
    def run(self, sequence: Sequence, starts: np.ndarray, ends: np.ndarray,
            branch: Callable | None = None) -> list[dict]:
        """Detections (eval frame) after each window [starts[k], ends[k]); `branch(k, state, frame_index)` is
        called after step k, for protocols that fork from the stream."""
        return self.run_many([sequence], [starts], [ends], branch)[0]

    @torch.inference_mode()
    def run_many(self, sequences: list[Sequence], starts: list[np.ndarray], ends: list[np.ndarray],
                 branch: Callable | None = None) -> list[list[dict]]:
        """Several sequences streamed side by side as one batch (each its own state); shorter ones are fed
        empty windows past their end and those outputs dropped. Same detections as one at a time."""
        count = max(len(e) for e in ends)
        detections: list[list[dict]] = [[] for _ in sequences]
        frames = [self._frames(s) if self.uses_frames else None for s in sequences]
        state, shown = None, [None] * len(sequences)
        for lo in range(0, count, CHUNK_STEPS):
            hist = torch.stack([self._histograms(s, b[lo:lo + CHUNK_STEPS], e[lo:lo + CHUNK_STEPS],
                                                 min(CHUNK_STEPS, count - lo))
                                for s, b, e in zip(sequences, starts, ends)], dim=1)
            for j in range(hist.shape[0]):
                k = lo + j
                frame = None
                if self.uses_frames:
                    wanted = [max(s.frame_index(int(b[min(k, len(b) - 1)])), 0) for s, b in zip(sequences, starts)]
                    if wanted != shown:
                        frame, shown = self._frame_batch([f[i] for f, i in zip(frames, wanted)]), wanted
                result, state = self.model(hist[j].to(self.device), frame, state)
                for i, detection in enumerate(result):
                    if k < len(ends[i]):
                        detections[i].append(_to_numpy(detection))
                if branch is not None:
                    branch(k, state, shown[0])
        return detections

    def step_from(self, sequence: Sequence, state, start: int, end: int, frame_index: int | None) -> dict:
        """One forked step [start, end) from `state` with the frame `frame_index` (interframe protocol)."""
        hist = self._histograms(sequence, np.array([start]), np.array([end]))
        frame = self._frame_batch([self._frames(sequence)[frame_index]]) if self.uses_frames else None
        result, _ = self.model(hist.to(self.device), frame, state)
        return _to_numpy(result[0])

    def _histograms(self, sequence: Sequence, starts: np.ndarray, ends: np.ndarray,
                    count: int | None = None) -> torch.Tensor:
        """(count, C, H, W) float histograms of the windows; empty windows and rows past `len(ends)` are zero."""
        width, height = self.geometry.size
        out = np.zeros((count or len(ends), 2 * self.bins, height, width), np.uint8)
        if not self.uses_events:
            return torch.from_numpy(out).float()
        full = np.flatnonzero(ends > starts)
        if len(full):
            out[full] = window_histograms(sequence, starts[full], ends[full], self.geometry, self.bins)
        return torch.from_numpy(out).float()

    def _frames(self, sequence: Sequence) -> np.ndarray:
        if getattr(self, "_frames_for", None) != sequence.name:
            self._frame_cache = np.stack([sequence.frame(i, self.geometry) for i in range(len(sequence.frame_times))])
            self._frames_for = sequence.name
        return self._frame_cache

    def _frame_batch(self, images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0).to(self.device)


def stream_runs(runner: StreamRunner, sequences: list[Sequence], rate_hz: float, dense: bool) -> list[ScoredRun]:
    """Stream the sequences (as one batch) at `rate_hz`; score every step with ground truth (dense) or only
    the labelled instants."""
    windows = [stream_windows(s, rate_hz) for s in sequences]
    outputs = runner.run_many(sequences, [w[0] for w in windows], [w[1] for w in windows])
    runs = []
    for sequence, (_, ends), detections in zip(sequences, windows, outputs):
        gt, scored = [], []
        for k, t in enumerate(ends):
            t = int(t)
            if sequence.is_labelled(t) if dense else _is_label_time(sequence, t):
                truth = sequence.ground_truth(t) if dense else _labels_at(sequence, t)
                gt.append(runner.protocol.prepare_ground_truth(truth, sequence.start_us))
                scored.append(k)
        runs.append(ScoredRun(ends, detections, gt, scored))
    return runs


def _is_label_time(sequence: Sequence, t: int) -> bool:
    index = np.searchsorted(sequence.labels["t"], t)
    return bool(index < len(sequence.labels) and sequence.labels["t"][index] == t)


def _labels_at(sequence: Sequence, t: int) -> np.ndarray:
    from flexdet.training.ground_truth import labels_at

    return labels_at(sequence.labels, t)


def interframe_runs(runner: StreamRunner, sequence: Sequence) -> dict[float | None, ScoredRun]:
    """DAGr's interframe protocol for one sequence: one ScoredRun per delta (keyed by its rate, None = empty)."""
    protocol = runner.protocol
    prepared = protocol.prepare_ground_truth(sequence.labels, sequence.start_us)
    pairs = persistent_pairs(prepared, 0.1, sequence.frame_times)
    deltas = interframe_deltas()
    runs = {d.rate_hz: ScoredRun(np.zeros(0, np.int64), [], [], []) for d in deltas}
    if len(pairs) == 0:
        return runs
    targets = {d.rate_hz: interframe_targets(prepared, pairs, d.delta_us) for d in deltas}
    pair_of_start = {int(t0): i for i, t0 in enumerate(pairs[:, 0])}
    starts, ends = stream_windows(sequence, 20)
    collected = {d.rate_hz: ([], []) for d in deltas}

    def branch(k: int, state, frame_index) -> None:
        i = pair_of_start.get(int(ends[k]))
        if i is None:
            return
        t0 = int(ends[k])
        index = max(sequence.frame_index(t0), 0) if sequence.has_frames else None
        for d in deltas:
            collected[d.rate_hz][0].append(t0 + d.delta_us)
            collected[d.rate_hz][1].append((runner.step_from(sequence, state, t0, t0 + d.delta_us, index),
                                            targets[d.rate_hz][i]))

    first = int(pairs[0, 0])
    if first == sequence.start_us:  # the stream's first step ends one window later: fork from a fresh state
        branch_state = None
        index = 0 if sequence.has_frames else None
        for d in deltas:
            collected[d.rate_hz][0].append(first + d.delta_us)
            collected[d.rate_hz][1].append((runner.step_from(sequence, branch_state, first, first + d.delta_us, index),
                                            targets[d.rate_hz][0]))
    runner.run(sequence, starts, ends, branch)
    for d in deltas:
        times, items = collected[d.rate_hz]
        runs[d.rate_hz] = ScoredRun(np.asarray(times, np.int64), [p for p, _ in items], [g for _, g in items],
                                    list(range(len(items))))
    return runs


def score(runs: Seq[ScoredRun], protocol: Protocol, sequence_starts: Seq[int]) -> dict[str, float]:
    """COCO metrics over the scored steps of several runs; predictions get the protocol's filters too."""
    gt_frames, pred_frames = [], []
    for run, start in zip(runs, sequence_starts):
        for gt, k in zip(run.gt, run.scored):
            gt_frames.append(gt)
            pred_frames.append(_filtered(run.detections[k], int(run.times[k]), protocol, start))
    width, height = protocol.eval_size
    return coco_metrics(gt_frames, pred_frames, protocol.num_classes, height, width)


def _filtered(detection: dict, t: int, protocol: Protocol, sequence_start: int) -> np.ndarray:
    from flexdet.training.coco_eval import predictions_as_boxes

    boxes = predictions_as_boxes(detection).copy()
    boxes["t"] = t
    return protocol.filter_boxes(boxes, sequence_start)


def evaluate(model: torch.nn.Module, dataset: Dataset, rates_hz: Seq[float], protocol_kind: str = "stream",
             out_dir: str | Path | None = None, model_name: str = "model", progress: bool = True,
             bins: int = 10, batch_size: int = 8) -> list[dict]:
    """Metric rows ({model, protocol, rate_hz, AP, AP50, ...}) of `model` on `dataset`; with `out_dir`, the
    predictions per rate and sequence (label files' frame and dtype). Stream protocols run `batch_size`
    sequences side by side."""
    from tqdm import tqdm

    if protocol_kind not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {PROTOCOLS}, got {protocol_kind!r}")
    if protocol_kind == "interframe" and not dataset.has_frames:
        raise ConfigError(f"{dataset.root}: the interframe protocol needs RGB frames (DSEC layout)")
    runner = StreamRunner(model, dataset.protocol, bins, next(model.parameters()).device)
    dense = protocol_kind == "stream" and all(s.dense is not None for s in dataset.sequences)
    per_rate: dict[float | None, list[ScoredRun]] = {}
    bar = tqdm(total=len(dataset.sequences) * (1 if protocol_kind == "interframe" else len(rates_hz)),
               desc=f"eval {model_name} ({protocol_kind})", unit="run", disable=not progress, dynamic_ncols=True)
    if protocol_kind == "interframe":
        for sequence in dataset.sequences:
            for rate, run in interframe_runs(runner, sequence).items():
                per_rate.setdefault(rate, []).append(run)
            bar.update(1)
    else:
        for rate in rates_hz:
            for lo in range(0, len(dataset.sequences), batch_size):
                chosen = dataset.sequences[lo:lo + batch_size]
                per_rate.setdefault(float(rate), []).extend(stream_runs(runner, chosen, rate, dense))
                bar.update(len(chosen))
    bar.close()
    starts = [s.start_us for s in dataset.sequences]
    rows = []
    for rate, runs in per_rate.items():
        metrics = score(runs, dataset.protocol, starts)
        rows.append({"model": model_name, "protocol": protocol_kind, "rate_hz": rate,
                     "steps_scored": sum(len(r.scored) for r in runs), **metrics})
        if out_dir is not None:
            for sequence, run in zip(dataset.sequences, runs):
                boxes = detections_to_boxes(run.detections, run.times, scale=dataset.protocol.scale)
                write_predictions(out_dir, rate, sequence.name, boxes)
    return rows


def evaluate_checkpoint(checkpoint: str | Path, data_root: str | Path, rates_hz: Seq[float],
                        protocol_kind: str = "stream", out_dir: str | Path | None = None, split: str = "test",
                        model_name: str | None = None, progress: bool = True) -> list[dict]:
    """Load a training checkpoint, open `split` of the dataset the way it was trained, evaluate, write results."""
    from flexdet.training.checkpoint import load_detector

    model, config, _, info = load_detector(checkpoint)
    data = config.data
    dataset = open_dataset(data_root, split, data.layout, data.protocol, data.downsample)
    try:
        if dataset.protocol.num_classes != model.config.num_classes:
            raise ConfigError(f"{checkpoint}: the model has {model.config.num_classes} classes but {data_root} is "
                              f"scored with {dataset.protocol.num_classes}")
        rows = evaluate(model, dataset, rates_hz, protocol_kind, out_dir, model_name or config.model.inputs,
                        progress, data.bins)
    finally:
        dataset.close()
    if out_dir is not None:
        write_results(out_dir, rows)
    return rows
