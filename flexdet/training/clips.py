"""Training clips: which sequence, rate and steps each batch column sees, and the tensors built from them.

A global batch mixes random clips (state reset, random sequence / rate / start) and streaming clips (each
streaming column walks through sequences clip after clip with its state carried, reset only when it moves
to a new sequence). The plan is a pure function of (seed, step, sampler position), so a resumed run, or
the ranks of a distributed run (each takes its slice of the global batch), see exactly the same clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flexdet.datasets.cache import WindowCache
from flexdet.datasets.sequences import Dataset
from flexdet.errors import ConfigError
from flexdet.training.augment import ClipAugment, augment_boxes, augment_images, draw_augment
from flexdet.training.config import AugmentConfig

NO_START = -(1 << 62)


@dataclass(frozen=True)
class Clip:
    """`steps` consecutive windows from step `start` of `sequence`'s stream at `rates[rate_index]`."""

    sequence: int
    rate_index: int
    start: int
    steps: int
    augment: ClipAugment
    reset: bool


@dataclass
class Batch:
    """Tensors of one batch: events (T, B, C, H, W) float counts, frames (T, B, 3, H, W) in [0, 1] or None,
    targets (T items: None when no column is labelled at that step, else B dicts), reset (B,) bool."""

    events: torch.Tensor
    frames: torch.Tensor | None
    targets: list[list[dict] | None]
    reset: torch.Tensor
    clips: list[Clip]


class ClipSampler:
    """The clip plan of every global batch; `state_dict()` is the position of the streaming columns."""

    def __init__(self, stream_lengths: list[list[int]], batch_size: int, clip_steps: int, stream_fraction: float,
                 augment: AugmentConfig, size: tuple[int, int], seed: int = 0, align: int = 1,
                 labelled_steps: list[list[np.ndarray]] | None = None) -> None:
        """`labelled_steps` (per sequence, per rate: the labelled step indices) makes random clips end on one."""
        self.lengths = stream_lengths
        self.batch_size = batch_size
        self.clip_steps = clip_steps
        self.num_stream = int(round(batch_size * stream_fraction))
        self.augment = augment
        self.size = size
        self.seed = seed
        self.align = int(align)
        self.step = 0
        usable = [(s, r) for s, per_rate in enumerate(stream_lengths) for r, n in enumerate(per_rate) if n >= clip_steps]
        if not usable:
            raise ConfigError(f"no sequence has {clip_steps} steps at any training rate; shorten data.clip_steps")
        self.usable = usable
        self.clip_ends = None
        if labelled_steps is not None:  # random clips: (sequence, rate, possible last steps)
            self.clip_ends = [(s, r, ends[ends >= clip_steps - 1]) for s, per_rate in enumerate(labelled_steps)
                              for r, ends in enumerate(per_rate)]
            self.clip_ends = [(s, r, ends) for s, r, ends in self.clip_ends if len(ends)]
            if not self.clip_ends:
                raise ConfigError(f"no labelled step has {clip_steps - 1} steps before it at any training rate; "
                                  "shorten data.clip_steps or use data.clip_end=any")
        # Streaming column j: [epoch, index into that epoch's sequence order, next step] (-1: must pick).
        self.columns = [[0, 0, -1] for _ in range(self.num_stream)]

    def next_batch(self) -> list[Clip]:
        """The next global batch: streaming columns first, then random clips."""
        clips = [self._stream_clip(j) for j in range(self.num_stream)]
        rng = np.random.default_rng([self.seed, 3, self.step])
        for _ in range(self.batch_size - self.num_stream):
            s, r, start = self._random_start(rng)
            clips.append(Clip(s, r, start, self.clip_steps, draw_augment(rng, self.augment, *self.size), True))
        self.step += 1
        return clips

    def _random_start(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(sequence, rate index, first step) of a random clip: uniform over clip starts (over labelled last
        steps with `labelled_steps`), so every sequence and rate is drawn by its share of them."""
        if self.clip_ends is not None:
            weights = np.array([len(ends) for _, _, ends in self.clip_ends], np.float64)
            s, r, ends = self.clip_ends[int(rng.choice(len(self.clip_ends), p=weights / weights.sum()))]
            return s, r, int(ends[int(rng.integers(0, len(ends)))]) - self.clip_steps + 1
        weights = np.array([self.lengths[s][r] - self.clip_steps + 1 for s, r in self.usable], np.float64)
        s, r = self.usable[int(rng.choice(len(self.usable), p=weights / weights.sum()))]
        return s, r, int(rng.integers(0, (self.lengths[s][r] - self.clip_steps) // self.align + 1)) * self.align

    def _stream_clip(self, j: int) -> Clip:
        column = self.columns[j]
        reset = False
        while True:
            order = np.random.default_rng([self.seed, 1, j, column[0]]).permutation(len(self.usable))
            s, r = self.usable[int(order[column[1]])]
            if column[2] < 0:
                column[2], reset = 0, True
            if column[2] + self.clip_steps <= self.lengths[s][r]:
                break
            column[1] += 1
            column[2] = -1
            if column[1] >= len(order):
                column[0], column[1] = column[0] + 1, 0
        rng = np.random.default_rng([self.seed, 2, j, column[0], column[1]])
        clip = Clip(s, r, column[2], self.clip_steps, draw_augment(rng, self.augment, *self.size), reset)
        column[2] += self.clip_steps
        return clip

    def state_dict(self) -> dict:
        return {"step": self.step, "columns": [list(c) for c in self.columns]}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.columns = [[int(v) for v in c] for c in state["columns"]]


class ClipLoader:
    """Builds a Batch from clips: cached stream inputs, the frame paired with each window by the input
    specification (latest at or before its start), augmented targets.

    `labels` (a flexdet.training.recipes.TrainingLabels) chooses the boxes of each step (label file only, or
    with pseudo labels); without it a step sees the sequence's own ground truth (dense when it has it)."""

    def __init__(self, dataset: Dataset, cache: WindowCache, rates_hz: list[float], use_frames: bool,
                 labels=None) -> None:
        self.dataset = dataset
        self.cache = cache
        self.rates = [float(r) for r in rates_hz]
        self.use_frames = use_frames
        self.labels = labels
        if use_frames and not dataset.has_frames:
            raise ConfigError(f"{dataset.root}: the recipe's model reads RGB frames but these sequences have none "
                              "(event-only data such as Gen1 / 1Mpx): train with model.inputs=events")

    def stream_lengths(self) -> list[list[int]]:
        """Number of stream steps of every sequence at every training rate."""
        return [[len(self.cache.windows(seq, rate)[1]) for rate in self.rates] for seq in self.dataset.sequences]

    def labelled_steps(self) -> list[list[np.ndarray]]:
        """Indices of the labelled steps of every sequence's stream at every training rate."""
        found = []
        for sequence in self.dataset.sequences:
            per_rate = []
            for rate in self.rates:
                ends = self.cache.windows(sequence, rate)[1]
                per_rate.append(np.flatnonzero([self.is_labelled(sequence, int(t)) for t in ends]))
            found.append(per_rate)
        return found

    def is_labelled(self, sequence, t: int) -> bool:
        """Whether the step ending at `t` has a training target."""
        if self.labels is None:
            return bool(sequence.is_labelled(t))
        return self.labels.at(sequence, t)[0] is not None

    def load(self, clips: list[Clip]) -> Batch:
        events, frames, targets = [], [], []
        for clip in clips:
            clip_events, clip_frames, clip_targets = self.load_clip(clip)
            events.append(clip_events)
            frames.append(clip_frames)
            targets.append(clip_targets)
        steps = clips[0].steps
        per_step = []
        for t in range(steps):
            column = [targets[b][t] for b in range(len(clips))]
            per_step.append(None if all(c is None for c in column) else
                            [c if c is not None else _unlabelled() for c in column])
        return Batch(torch.stack(events, dim=1), torch.stack(frames, dim=1) if self.use_frames else None, per_step,
                     torch.tensor([c.reset for c in clips]), clips)

    def load_clip(self, clip: Clip) -> tuple[torch.Tensor, torch.Tensor | None, list[dict | None]]:
        """(T, C, H, W) float events, (T, 3, H, W) frames or None, and T targets (None = unlabelled step)."""
        sequence = self.dataset.sequences[clip.sequence]
        rate = self.rates[clip.rate_index]
        index = np.arange(clip.start, clip.start + clip.steps)
        starts, ends = self.cache.windows(sequence, rate)
        events = augment_images(torch.from_numpy(np.ascontiguousarray(self.cache.inputs(sequence, rate, index))),
                                clip.augment, "nearest").float()
        frames = None
        if self.use_frames:
            spec = self.cache.spec
            chosen = np.array([spec.frame_index(sequence.frame_times, int(a), int(b))
                               for a, b in zip(starts[index], ends[index])])
            images = spec.paired_frames(self.cache.frames(sequence), chosen)
            images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
            frames = augment_images(images, clip.augment, "bilinear")
        width, height = self.dataset.geometry.size
        targets = [self.target(sequence, int(t), clip.augment, width, height) for t in ends[index]]
        return events, frames, targets

    def target(self, sequence, t: int, augment: ClipAugment, width: int, height: int) -> dict | None:
        """Training target at `t` in the augmented input frame (benchmark's training filter), None if unlabelled."""
        from flexdet.data.boxes import boxes_to_xyxy

        if self.labels is None:
            rows, pseudo = (sequence.ground_truth(t), False) if sequence.is_labelled(t) else (None, False)
        else:
            rows, pseudo = self.labels.at(sequence, t)
        if rows is None:
            return None
        benchmark = self.dataset.benchmark
        boxes = benchmark.prepare_ground_truth(rows, NO_START, training=True)
        xyxy = augment_boxes(boxes_to_xyxy(boxes), augment, width, height)
        moved = boxes.copy()
        moved["x"], moved["y"] = xyxy[:, 0], xyxy[:, 1]
        moved["w"], moved["h"] = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
        keep = benchmark.train_filter.keep(moved) & (moved["w"] > 0) & (moved["h"] > 0)
        if pseudo:
            return self.labels.pseudo_target(xyxy[keep], boxes["class_id"][keep], boxes["class_confidence"][keep])
        return {"boxes": torch.from_numpy(xyxy[keep]), "labels": torch.from_numpy(boxes["class_id"][keep].astype(np.int64))}


def _unlabelled() -> dict:
    """A column without ground truth at a step where others have it: no boxes and no background loss."""
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "bg_weight": 0.0}
