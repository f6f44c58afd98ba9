"""The first thing a newcomer runs: synthetic data -> three nano detectors (events + RGB, events only, frames
only) -> AP at 20, 60, 90 and 180 Hz on a continuous stream scored against exact dense ground truth.

Output folder: `data/` (DSEC layout), `<model>/` (run folder: checkpoint, TensorBoard; the fusion model's
`predictions/<rate>hz/<sequence>.npy`), `metrics.json` (one row per model and rate), `metrics.md`,
`ap_vs_rate.png` and `report.md`. Rerunning reuses finished data and trained models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from flexdet.atomic import atomic_write_text
from flexdet.data.synthetic import generate_dataset, load_preset
from flexdet.evaluation.evaluate import evaluate_checkpoint
from flexdet.evaluation.results import metrics_markdown, write_results
from flexdet.progress import progress_bar
from flexdet.training.config import load_train_config
from flexdet.training.trainer import train_or_reuse

MODELS = ("fusion", "events", "frames")
RATES_HZ = (20.0, 60.0, 90.0, 180.0)


@dataclass
class QuickstartOptions:
    """What to run: models, rates, recipe overrides (e.g. ["optim.steps=100"]), synth preset."""

    models: tuple[str, ...] = MODELS
    rates_hz: tuple[float, ...] = RATES_HZ
    overrides: list[str] = field(default_factory=list)
    synth_preset: str = "quickstart"
    progress: bool = True


def make_data(out: Path, preset: str, progress: bool) -> Path:
    """Generate (or reuse) the synthetic dataset under `out/data`."""
    config = load_preset(preset)
    with progress_bar(total=config.dataset.sequences, desc="synthetic data", unit="seq", disable=not progress) as bar:
        return generate_dataset(out / "data", config, progress=lambda plan: bar.update(1))


def train_model(inputs: str, data: Path, run_dir: Path, options: QuickstartOptions) -> Path:
    """Train one nano model with the quickstart recipe, or reuse a finished checkpoint in `run_dir`."""
    config = load_train_config(preset="quickstart", overrides=[f"model.inputs={inputs}", *options.overrides,
                                                                f"run.progress={str(options.progress).lower()}"])
    return train_or_reuse(config, data, run_dir)


def run_quickstart(out: str | Path, options: QuickstartOptions | None = None) -> list[dict]:
    """Run everything into `out`; returns the metric rows written to `out/metrics.json`."""
    options = options or QuickstartOptions()
    out = Path(out)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = make_data(out, options.synth_preset, options.progress)
    timings["data"] = time.perf_counter() - started
    rows: list[dict] = []
    for inputs in options.models:
        tick = time.perf_counter()
        checkpoint = train_model(inputs, data, out / inputs, options)
        timings[f"train {inputs}"] = time.perf_counter() - tick
        tick = time.perf_counter()
        predictions = out / inputs if inputs == "fusion" else None
        model_rows = evaluate_checkpoint(checkpoint, data, options.rates_hz, "stream", predictions, "test", inputs,
                                         options.progress)
        timings[f"eval {inputs}"] = time.perf_counter() - tick
        rows += model_rows
    write_results(out, rows)
    timings["total"] = time.perf_counter() - started
    atomic_write_text(out / "report.md", _report(rows, timings))
    print(rate_table(rows))
    print(f"quickstart done in {timings['total'] / 60:.1f} min; report: {out / 'report.md'} (all COCO metrics)")
    return rows


MODEL_LABELS = {"fusion": "fusion (events + RGB)", "events": "events only", "frames": "frames only"}


def rate_table(rows: list[dict]) -> str:
    """Model x rate, "AP / AP50" in % per cell: the README's layout, so a run compares with it at a glance."""
    rates = sorted({float(r["rate_hz"]) for r in rows})
    cells = {(r["model"], float(r["rate_hz"])): r for r in rows}
    lines = ["| model | " + " | ".join(f"{rate:g} Hz" for rate in rates) + " |", "|---" * (len(rates) + 1) + "|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        values = []
        for rate in rates:
            row = cells.get((model, rate), {})
            values.append(" / ".join("-" if row.get(k) is None else f"{100 * float(row[k]):.1f}" for k in ("AP", "AP50")))
        lines.append(f"| {MODEL_LABELS.get(model, model)} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n\nAP / AP50 in % (COCO, pycocotools).\n"


def _report(rows: list[dict], timings: dict[str, float]) -> str:
    table = metrics_markdown(rows, ["model", "rate_hz", "AP", "AP50", "AP75", "APs", "APm", "APl", "steps_scored"])
    times = "\n".join(f"- {name}: {seconds:.0f} s" for name, seconds in timings.items())
    return ("# flexdet quickstart\n\nThree nano detectors trained on the synthetic quickstart set (`data/`), "
            "evaluated on its test split as a continuous stream at each rate (state carried, window = 1/rate), "
            "every step scored against the exact dense ground truth.\n\n"
            "- fusion: events + RGB (FlexFuser gates); events: events only; frames: RGB only (the most recent "
            "frame at each window's start, so at 180 Hz it can be 50 ms old).\n\n"
            f"{rate_table(rows)}\n{table}\n![AP vs rate](ap_vs_rate.png)\n\n## Wall time\n{times}\n")
