"""The training loop: AdamW + one-cycle, AMP on GPU, gradient clipping, random and streaming clips, atomic
checkpoints with exact resume, TensorBoard scalars, tqdm progress, DistributedDataParallel under torchrun.

Run folder: `config.yaml`, `checkpoints/last.pt` (every `run.checkpoint_every` steps and at the end),
`tb/` (TensorBoard). The loss of a global batch is the mean of each rank's shard loss (DDP averages the
gradients), so one process reproduces a distributed step by averaging the shard losses itself.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flexdet.atomic import clean_stale_temporaries
from flexdet.config import save_yaml, to_dict
from flexdet.data.clock import stride_of, window_of
from flexdet.data.input_spec import InputSpec
from flexdet.data.representations.kinds import channels_per_window
from flexdet.datasets import Dataset, WindowCache, open_dataset
from flexdet.errors import CheckpointError, ConfigError
from flexdet.models.checkpoint import load_model, read_training_checkpoint, run_checkpoint
from flexdet.training.checkpoint import rng_states, save_checkpoint, set_rng_states
from flexdet.training.clips import ClipLoader, ClipSampler
from flexdet.training.config import TrainConfig
from flexdet.training.distributed import DistContext, mean_across, setup_distributed, shard
from flexdet.training.recipes import training_labels


class LossModule(nn.Module):
    """Wraps a FlexDetector so DistributedDataParallel sees the BPTT loss as `forward`."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, events, frames, targets, state):
        return self.detector.compute_losses(events, frames, targets, state)


@dataclass
class TrainResult:
    """Where the run ended: step reached, checkpoint path and the last logged losses."""

    step: int
    checkpoint: Path
    losses: dict[str, float] = field(default_factory=dict)


def build_detector(config: TrainConfig, num_classes: int):
    """The FlexDetector the recipe names: fusion (events + RGB), events only, or frames only; it reads the
    data's representation (2 * data.bins channels per event view for a stacked histogram)."""
    from flexdet.models import build_model

    inputs = config.model.inputs
    options = {"in_channels": channels_per_window(config.data.representation, config.data.bins),
               "s5_train_window_us": window_of(config.data.rates_hz[0]), **config.model.options}
    return build_model(config.model.preset, num_classes=num_classes, use_frames=inputs != "events",
                       use_events=inputs != "frames", **options)


def training_input_spec(config: TrainConfig, dataset: Dataset, dual_windows: bool) -> InputSpec:
    """The input specification a recipe trains with: the dataset's geometry, the data section's representation
    settings, the window of the first training rate."""
    data = config.data
    return dataset.input_spec(representation=data.representation, bins=data.bins, clip=data.clip,
                              time_norm=data.time_norm, end_inclusive=data.end_inclusive,
                              window_us=window_of(data.rates_hz[0]),
                              dual_windows=dual_windows, frame_rule=data.frame_rule)


class Trainer:
    """One training run of `config` on the dataset at `data_root`, writing into `out_dir`."""

    def __init__(self, config: TrainConfig, data_root: str | Path, out_dir: str | Path,
                 context: DistContext | None = None) -> None:
        self.config = config
        self.data_root = Path(data_root)
        self.out_dir = Path(out_dir)
        self.context = context or setup_distributed(config.run.device)
        if config.run.threads > 0:
            torch.set_num_threads(config.run.threads)
        if config.data.batch_size % self.context.world_size:
            raise ConfigError(f"data.batch_size {config.data.batch_size} must divide by the {self.context.world_size} "
                              "processes")
        _seed_everything(config.run.seed + self.context.rank)
        data = config.data
        self.dataset = open_dataset(self.data_root, data.train_split, data.layout, data.benchmark, data.downsample,
                                    data.event_downscale)
        self.detector = build_detector(config, self.dataset.benchmark.num_classes).to(self.context.device)
        if config.model.init:
            self._load_init(config.model.init)
        self.module: nn.Module = LossModule(self.detector)
        if self.context.enabled:
            self.module = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[self.context.local_rank] if self.context.device.type == "cuda" else None,
                find_unused_parameters=config.model.inputs == "frames")
        cache_dir = data.cache_dir or str(self.out_dir / "cache") if data.cache == "disk" else None
        self.spec = training_input_spec(config, self.dataset, self.detector.config.dual_windows)
        self.cache = WindowCache(self.spec, cache_dir, keep=data.cache != "none")
        use_frames = config.model.inputs != "events"
        self.loader = ClipLoader(self.dataset, self.cache, data.rates_hz, use_frames, training_labels(config))
        self.sampler = ClipSampler(self.loader.stream_lengths(), data.batch_size, data.clip_steps,
                                   data.stream_fraction, config.augment, self.dataset.geometry.size, config.run.seed,
                                   data.clip_align,
                                   self.loader.labelled_steps() if data.clip_end == "labelled" else None)
        optim = config.optim
        self.optimizer = torch.optim.AdamW(self.detector.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
        self.scheduler = _schedule(self.optimizer, optim.lr, optim.steps, optim.warmup_pct, optim.final_div)
        self.amp = optim.amp and self.context.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0
        self.stream_state: tuple[torch.Tensor, ...] | None = None

    @property
    def checkpoint_path(self) -> Path:
        return run_checkpoint(self.out_dir)

    def dataset_info(self) -> dict:
        """What evaluation needs to know about the training data, as plain data."""
        benchmark = self.dataset.benchmark
        width, height = self.dataset.geometry.size
        return {"root": str(self.data_root), "layout": self.dataset.layout, "benchmark": benchmark.name,
                "classes": list(benchmark.class_names), "downsample": self.config.data.downsample,
                "input_size": [width, height]}

    def train_step(self) -> dict[str, float]:
        """One optimiser step on the next global batch (this rank's shard); returns the logged losses."""
        clips = self.sampler.next_batch()
        batch = self.loader.load(shard(clips, self.context))
        device = self.context.device
        events = batch.events.to(device, non_blocking=True)
        frames = batch.frames.to(device, non_blocking=True) if batch.frames is not None else None
        targets = [None if step is None else [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()}
                                               for t in step] for step in batch.targets]
        state = self._carried_state(batch.reset.to(device), events)
        self._set_windows(batch.clips)
        self.detector.train()
        with torch.autocast(device.type, enabled=self.amp):
            losses, new_state = self.module(events, frames, targets, state)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        if self.config.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.detector.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.stream_state = tuple(s.detach() for s in new_state)
        self.step += 1
        return {name: float(value.detach()) for name, value in losses.items()}

    def _set_windows(self, clips: list) -> None:
        """S5 timesteps follow each column's window (1 / its clip's rate) relative to s5_train_window_us."""
        if self.detector.config.recurrence != "s5":
            return
        from flexdet.models.s5 import set_step_scale

        windows = [float(stride_of(self.config.data.rates_hz[clip.rate_index])) for clip in clips]
        scales = torch.tensor(windows) / float(self.detector.config.s5_train_window_us)
        set_step_scale(self.detector, float(scales[0]) if len(set(windows)) == 1 else scales.to(self.context.device))

    def _carried_state(self, reset: torch.Tensor, events: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The previous batch's state for streaming columns, zeros where a clip starts fresh."""
        if self.stream_state is None:
            return self.detector.init_state(events.shape[1], events.shape[-2], events.shape[-1], events.device)
        keep = (~reset).to(events.dtype)
        return tuple(s * keep.view(-1, *([1] * (s.dim() - 1))) for s in self.stream_state)

    def _load_init(self, path: str) -> None:
        """Start from the weights of any flexdet checkpoint with the same model config, e.g. the FAL student from
        its teacher, or a converted published model."""
        loaded = load_model(path, map_location=str(self.context.device))
        try:
            self.detector.load_state_dict(loaded.model.state_dict())
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: weights do not fit this recipe's model ({exc})") from None

    def state_dict(self) -> dict:
        """Everything an exact resume needs, as weights_only-loadable data."""
        return {"model": self.detector.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_states(), "sampler": self.sampler.state_dict(), "step": self.step,
                "stream_state": list(self.stream_state) if self.stream_state is not None else None,
                "config": to_dict(self.config), "model_config": to_dict(self.detector.config),
                "input": to_dict(self.spec),
                "dataset": self.dataset_info(), "world_size": self.context.world_size}

    def save(self) -> Path:
        """Write the checkpoint atomically (rank 0 only)."""
        if self.context.is_main:
            save_checkpoint(self.checkpoint_path, self.state_dict())
        return self.checkpoint_path

    def resume(self, path: str | Path | None = None) -> None:
        """Continue exactly from a checkpoint (default: this run's last.pt)."""
        payload = read_training_checkpoint(path or self.checkpoint_path, map_location=str(self.context.device))
        if payload.get("world_size", 1) != self.context.world_size:
            raise CheckpointError(f"{path or self.checkpoint_path}: written by {payload.get('world_size')} processes, "
                                  f"resuming with {self.context.world_size} would change the data order")
        try:
            self.detector.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            self.scaler.load_state_dict(payload["scaler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{path or self.checkpoint_path}: does not match this recipe ({exc})") from None
        self.sampler.load_state_dict(payload["sampler"])
        self.step = int(payload["step"])
        stream = payload.get("stream_state")
        if self.context.world_size == 1:
            self.stream_state = tuple(s.to(self.context.device) for s in stream) if stream is not None else None
            set_rng_states(payload["rng"])
        else:  # rank 0 saved its own state only: streams restart from zero state, RNGs reseed per (step, rank)
            self.stream_state = None
            _seed_everything(self.config.run.seed + 1000 * self.step + self.context.rank)

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to `optim.steps` (or stop after step `stop_after`, checkpointing there)."""
        from flexdet.progress import progress_bar

        run = self.config.run
        target = self.config.optim.steps if stop_after is None else min(stop_after, self.config.optim.steps)
        writer = self._writer()
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(self.checkpoint_path.parent)  # what a killed checkpoint write left behind
            save_yaml(self.config, self.out_dir / "config.yaml")
        bar = progress_bar(total=self.config.optim.steps, initial=self.step, desc=f"train {self.config.model.inputs}",
                   unit="step", disable=not (run.progress and self.context.is_main))
        losses: dict[str, float] = {}
        with _StopOnSignal() as stop:
            while self.step < target:
                losses = self._fit_step(target, writer, bar)
                if stop.signal is not None:
                    self.save()
                    bar.close()
                    print(f"{stop.signal}: stopped after step {self.step}; checkpoint {self.checkpoint_path} "
                          "(continue with --resume)", file=sys.stderr, flush=True)
                    raise KeyboardInterrupt
        self.detector.set_window_us(self.detector.config.s5_train_window_us)  # one window again, not per column
        bar.close()
        if writer is not None:
            writer.close()
        return TrainResult(self.step, self.checkpoint_path, losses)

    def _fit_step(self, target: int, writer, bar) -> dict[str, float]:
        """One step of `fit` with its logging and periodic checkpoint."""
        run = self.config.run
        losses = self.train_step()
        if not math.isfinite(losses["total"]):
            raise ConfigError(f"training diverged at step {self.step} (loss {losses['total']}); lower optim.lr")
        bar.update(1)
        if self.step % run.log_every == 0 or self.step == target:
            logged = {k: mean_across(v, self.context) for k, v in losses.items()}
            bar.set_postfix(loss=f"{logged['total']:.3f}")
            if writer is not None:
                for name, value in logged.items():
                    writer.add_scalar(f"loss/{name}", value, self.step)
                writer.add_scalar("lr", self.scheduler.get_last_lr()[0], self.step)
        if self.step % run.checkpoint_every == 0 or self.step == target:
            self.save()
        return losses

    def _writer(self):
        if not self.context.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out_dir / "tb"))

    def close(self) -> None:
        self.dataset.close()


def train(config: TrainConfig, data_root: str | Path, out_dir: str | Path, resume: bool = False,
          stop_after: int | None = None) -> TrainResult:
    """Build a Trainer, optionally resume from `out_dir/checkpoints/last.pt`, and fit."""
    trainer = Trainer(config, data_root, out_dir)
    try:
        if resume and trainer.checkpoint_path.is_file():
            trainer.resume()
        elif resume and trainer.context.is_main:
            print(f"--resume: no checkpoint at {trainer.checkpoint_path} yet; starting from step 0")
        return trainer.fit(stop_after)
    finally:
        trainer.close()


def train_or_reuse(config: TrainConfig, data: str | Path, run_dir: str | Path) -> Path:
    """Train `config` into `run_dir`, resuming an unfinished run and reusing a finished one; its checkpoint."""
    trainer = Trainer(config, data, run_dir)
    try:
        if trainer.checkpoint_path.is_file():
            try:
                if int(read_training_checkpoint(trainer.checkpoint_path)["step"]) <= config.optim.steps:
                    trainer.resume()
            except CheckpointError:
                pass
        if trainer.step < config.optim.steps:
            trainer.fit()
        return trainer.checkpoint_path
    finally:
        trainer.close()


def _schedule(optimizer, lr: float, steps: int, warmup_pct: float, final_div: float):
    """One-cycle (warm-up, then cosine down to lr / final_div). The warm-up takes at least 2 steps and leaves at
    least 1 (torch divides by each phase's length); runs of 1-2 steps keep a constant lr."""
    if steps < 3:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    pct = min(max(warmup_pct, 2.0 / steps), (steps - 1) / steps)
    div_factor = 25.0
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=pct,
                                               div_factor=div_factor, final_div_factor=final_div / div_factor)


class _StopOnSignal:
    """SIGINT / SIGTERM during training set `signal` (the loop then checkpoints and stops) instead of killing the
    step midway; the previous handlers come back on exit. Only in the main thread, where Python allows it."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signal.Signals(number).name

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
