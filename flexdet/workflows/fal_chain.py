"""The whole FAL chain in one call: teacher -> pseudo labels -> student -> evaluation at every rate.

Run folder: `teacher/` and `student/` (run folders), `metrics.json` / `metrics.md` / `ap_vs_rate.png` of the
student (and `teacher` rows), `timings.json`. Pseudo labels are written next to the training split's labels
(`pseudo_tracks.npy`). A rerun reuses finished trainings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flexdet.atomic import atomic_write_text
from flexdet.config import apply_overrides
from flexdet.datasets.sequences import open_dataset
from flexdet.errors import ConfigError
from flexdet.evaluation.evaluate import evaluate_checkpoint
from flexdet.evaluation.results import write_results
from flexdet.fal.generate import pseudo_label_checkpoint
from flexdet.training.config import TrainConfig
from flexdet.training.recipes import apply_recipe
from flexdet.training.trainer import train_or_reuse


@dataclass
class ChainResult:
    """Checkpoints of the chain, its metric rows and the wall time of each stage (s)."""

    teacher: Path
    student: Path
    rows: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def run_fal_chain(base: TrainConfig, data: str | Path, out: str | Path, rates_hz: Sequence[float] = (20.0, 180.0),
                  eval_split: str | None = "test", progress: bool = True) -> ChainResult:
    """Teacher (base recipe + teacher overlay, `optim.steps` of the base) -> pseudo-label the training split ->
    student (`fal.student` lr / steps) -> stream evaluation of teacher and student on `eval_split` (None: skip)."""
    out = Path(out)
    base = apply_overrides(base, {"run.progress": progress})
    check_chain_inputs(base, data, eval_split)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    teacher = train_or_reuse(apply_recipe(base, "teacher"), data, out / "teacher")
    timings["train teacher"] = time.perf_counter() - tick
    tick = time.perf_counter()
    pseudo_label_checkpoint(teacher, data, base.data.train_split, base.fal, show_progress=progress)
    timings["pseudo-label"] = time.perf_counter() - tick
    tick = time.perf_counter()
    student = train_or_reuse(apply_recipe(base, "student", init=str(teacher)), data, out / "student")
    timings["train student"] = time.perf_counter() - tick
    rows: list[dict] = []
    if eval_split is not None:
        tick = time.perf_counter()
        for name, checkpoint in (("teacher", teacher), ("student", student)):
            rows += evaluate_checkpoint(checkpoint, data, rates_hz, "stream", None, eval_split, name, progress)
        write_results(out, rows)
        timings["eval"] = time.perf_counter() - tick
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2) + "\n")
    return ChainResult(teacher, student, rows, timings)


def check_chain_inputs(base: TrainConfig, data: str | Path, eval_split: str | None) -> None:
    """Open the training split and the evaluation split before any training, so an empty or missing split ends
    the chain in seconds, not after teacher and student have trained."""
    data_config = base.data
    open_dataset(data, data_config.train_split, data_config.layout, data_config.benchmark,
                 data_config.downsample, data_config.event_downscale).close()
    if eval_split is not None:
        try:
            open_dataset(data, eval_split, data_config.layout, data_config.benchmark, data_config.downsample,
                         data_config.event_downscale).close()
        except ConfigError as exc:
            raise ConfigError(f"{exc} (the evaluation split: choose another with --split, or --split none to skip "
                              "evaluation)") from None
