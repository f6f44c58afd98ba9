"""`flexdet experiment frequency`: detectors trained with the same budget on the synthetic `frequency` benchmark
(fast objects) from 20 Hz labels, each evaluated as a continuous stream at 20, 45, 90 and 180 Hz against the
exact dense ground truth.

Models are named `<inputs>[-s5][+mr|+fal][@chains]`: inputs events, frames or fusion; `-s5` the S5 state-space
recurrence instead of the ConvLSTM (SSM); `+mr` multi-rate training (clips at every evaluation rate, sparse labels
only, each random clip ending on a label instant); `+fal` frequency-adjusted labels (teacher, pseudo labels,
student); `@chains` the same trained model (its run folder is shared) run by the phase-shifted chains schedule
with the freshest frame (`SCHEDULES`) instead of one continuous stream. Budget: every model gets `optim.steps` optimiser steps of the budget recipe (configs/train/
frequency_<budget>.yaml); a FAL model spends them as a teacher (steps - fal.student.steps) and a student.
Output folder: `data/`, one run folder per model and seed, `frequency.json` (rows model, seed, rate_hz, AP,
AP50), `frequency.md`, `frequency.png`, `learning_curves.png`, `README.md` (table over seeds, verdicts, FAL's
pseudo-label quality against the dense truth, settings, wall time).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flexdet.atomic import atomic_path, atomic_write_text
from flexdet.config import apply_overrides
from flexdet.errors import ConfigError
from flexdet.evaluation.evaluate import evaluate_checkpoint
from flexdet.evaluation.results import metrics_markdown, plot_ap_vs_rate, write_metrics_json
from flexdet.fal.quality import pseudo_label_quality
from flexdet.training.config import load_train_config
from flexdet.training.recipes import apply_recipe
from flexdet.training.trainer import train_or_reuse
from flexdet.workflows.fal_chain import run_fal_chain
from flexdet.workflows.quickstart import make_data

RATES_HZ = (20.0, 45.0, 90.0, 180.0)
MODELS = ("events", "frames", "fusion", "fusion@chains", "fusion+fal")
INPUTS = ("events", "frames", "fusion")
FLAGS = ("mr", "fal")
# Evaluation schedule of a model name's `@` suffix: (schedule, frame rule; None = the model's own).
SCHEDULES = {"stream": ("stream", None), "chains": ("chains", "latest_before_end")}
BUDGETS = ("quick", "medium", "full")
TARGET_DROP_AP = 2.0  # the bar: 20 -> 180 Hz drop at most 2 AP, 20 Hz AP at most 0.5 below fusion's
TARGET_LOW_MARGIN_AP = 0.5


@dataclass(frozen=True)
class ModelName:
    """A parsed `<inputs>[-s5][+mr|+fal][@chains]`."""

    inputs: str
    s5: bool
    multi_rate: bool
    fal: bool
    schedule: str = "stream"

    @classmethod
    def parse(cls, name: str) -> ModelName:
        trained, _, schedule = name.partition("@")
        base, *flags = trained.split("+")
        inputs, _, recurrence = base.partition("-")
        if inputs not in INPUTS or recurrence not in ("", "s5") or set(flags) - set(FLAGS) or \
                len(set(flags)) != len(flags) or (inputs == "frames" and (recurrence or flags)) or \
                {"mr", "fal"} <= set(flags) or (schedule and schedule not in set(SCHEDULES) - {"stream"}):
            raise ConfigError(f"model {name!r}: expected <{'|'.join(INPUTS)}>[-s5][+mr|+fal][@chains] (frames alone "
                              f"has no recurrence to change; FAL streams at its own rate, so +mr and +fal do not "
                              f"combine), e.g. fusion-s5+mr; the defaults are {', '.join(MODELS)}")
        return cls(inputs, recurrence == "s5", "mr" in flags, "fal" in flags, schedule or "stream")


@dataclass
class FrequencyOptions:
    """What to run: budget (recipe frequency_<budget>), synth preset, rates, models, seeds, extra recipe overrides,
    an existing dataset to use instead of generating one, and whether to add the FAL ablations."""

    budget: str = "quick"
    synth_preset: str = "frequency"
    rates_hz: tuple[float, ...] = RATES_HZ
    models: tuple[str, ...] = MODELS
    seeds: tuple[int, ...] = (0,)
    overrides: list[str] = field(default_factory=list)
    data: str | None = None
    progress: bool = True
    ablations: bool = False


def budget_config(budget: str, inputs: str, overrides: list[str]):
    """The budget recipe for one input kind, with overrides."""
    if budget not in BUDGETS:
        raise ConfigError(f"--budget must be one of {BUDGETS}, got {budget!r}")
    return load_train_config(preset=f"frequency_{budget}", overrides=[f"model.inputs={inputs}", *overrides])


def model_config(budget: str, model: str, rates_hz: tuple[float, ...], overrides: list[str], seed: int = 0):
    """The recipe of one compared model: the budget recipe for its inputs, the S5 variant of its model size,
    multi-rate clips at `rates_hz` (sparse labels, clips ending on labels), the seed; user overrides last."""
    name = ModelName.parse(model)
    config = budget_config(budget, name.inputs, [])
    changes: dict = {"run.seed": seed}
    if name.s5:
        changes["model.preset"] = f"{config.model.preset}-s5"
    if name.multi_rate:
        changes.update({"data.rates_hz": sorted(float(r) for r in rates_hz), "data.labels": "sparse",
                        "data.clip_end": "labelled"})
    return apply_overrides(apply_overrides(config, changes), list(overrides))


def fal_base(config):
    """The recipe with the teacher's share of the budget: steps - fal.student.steps."""
    teacher_steps = config.optim.steps - config.fal.student.steps
    if teacher_steps < 1:
        raise ConfigError(f"fal.student.steps ({config.fal.student.steps}) must be below optim.steps "
                          f"({config.optim.steps}): the teacher and the student share the budget")
    return apply_overrides(config, {"optim.steps": teacher_steps})


def run_folder(model: str, seed: int) -> str:
    """Run folder name of a model and seed: `fusion-s5_mr`, `fusion_seed1`; a schedule suffix shares the trained
    model's folder (`fusion@chains` -> `fusion`)."""
    return model.partition("@")[0].replace("+", "_") + (f"_seed{seed}" if seed else "")


def run_frequency(out: str | Path, options: FrequencyOptions | None = None) -> list[dict]:
    """Run the experiment into `out`; returns the rows written to `frequency.json`."""
    options = options or FrequencyOptions()
    if not options.models or not options.seeds:
        raise ConfigError("--models and --seeds must name at least one model and one seed")
    for model in options.models:
        ModelName.parse(model)
    out = Path(out)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    data = Path(options.data) if options.data else make_data(out, options.synth_preset, options.progress)
    timings["data"] = time.perf_counter() - started
    rows: list[dict] = []
    extra = {"teacher": [], "ablations": [], "pseudo": [], "curves": {}}
    for model in options.models:
        for seed in options.seeds:
            tick = time.perf_counter()
            config = apply_overrides(model_config(options.budget, model, options.rates_hz, options.overrides, seed),
                                     {"run.progress": options.progress})
            run = out / run_folder(model, seed)
            if ModelName.parse(model).fal:
                chain = run_fal_chain(fal_base(config), data, run, eval_split=None, progress=options.progress)
                quality = pseudo_label_quality(data, config.data.train_split, config.fal.factor)
                extra["pseudo"].append({"model": model, "seed": seed, **quality})
                to_evaluate = [(chain.student, rows, model), (chain.teacher, extra["teacher"], model)]
                trained = {f"{model} seed {seed}: {part}": run / part for part in ("teacher", "student")}
                if options.ablations and model == "fusion+fal" and seed == options.seeds[0]:
                    to_evaluate += [(checkpoint, extra["ablations"], name)
                                    for name, checkpoint in fal_ablations(config, chain.teacher, data, out, options)]
            else:
                to_evaluate = [(train_or_reuse(config, data, run), rows, model)]
                trained = {f"{model} seed {seed}": run}
            if ModelName.parse(model).schedule == "stream":  # a schedule suffix reuses that model's run
                extra["curves"].update(trained)
                timings[f"train {model} seed {seed}"] = max(time.perf_counter() - tick,
                                                            training_seconds(list(trained.values())))
            timings[f"eval {model} seed {seed}"] = 0.0
            for checkpoint, into, label in to_evaluate:
                scored, seconds = evaluate_or_reuse(checkpoint, data, options.rates_hz, options.progress,
                                                    ModelName.parse(model).schedule)
                into += [{"model": label, "seed": seed, **row} for row in scored]
                timings[f"eval {model} seed {seed}"] += seconds
    timings["total"] = time.perf_counter() - started
    write_frequency(out, rows, options, timings, extra)
    return rows


def evaluate_or_reuse(checkpoint: Path, data: Path, rates_hz: tuple[float, ...], progress: bool,
                      schedule: str = "stream") -> tuple[list[dict], float]:
    """AP / AP50 of a checkpoint on the test split at each rate under `schedule` (`SCHEDULES`; chains rows also give
    the states held and their memory), and the seconds that took; kept beside the checkpoint
    (`frequency_eval[_<schedule>].json`, keyed by its size, mtime, the rates and the schedule) so a rerun of the
    experiment scores only what changed."""
    kind, frame_rule = SCHEDULES[schedule]
    stat = Path(checkpoint).stat()
    key = {"checkpoint": [stat.st_size, stat.st_mtime_ns], "data": str(data), "rates_hz": [float(r) for r in rates_hz],
           "schedule": [kind, frame_rule]}
    cache = Path(checkpoint).with_name("frequency_eval.json" if schedule == "stream"
                                       else f"frequency_eval_{schedule}.json")
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return stored["rows"], float(stored.get("seconds", 0.0))
    tick = time.perf_counter()
    kept = ("rate_hz", "AP", "AP50", "states", "state_kB")
    rows = [{name: row[name] for name in kept if name in row}
            for row in evaluate_checkpoint(checkpoint, data, rates_hz, kind, None, "test", None, progress,
                                           frame_rule=frame_rule)]
    seconds = time.perf_counter() - tick
    atomic_write_text(cache, json.dumps({"key": key, "rows": rows, "seconds": seconds}, indent=1) + "\n")
    return rows, seconds


def logged_losses(run: Path) -> list:
    """The total training loss a run logged to TensorBoard (events with step, value and wall_time; [] without)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = EventAccumulator(str(Path(run) / "tb"), size_guidance={"scalars": 0})
    logs.Reload()
    return logs.Scalars("loss/total") if "loss/total" in logs.Tags().get("scalars", []) else []


def training_seconds(runs: list[Path]) -> float:
    """Wall time the runs' training took, from their TensorBoard logs (first to last logged loss), so a run
    reused from an earlier invocation still reports what it cost."""
    return sum(events[-1].wall_time - events[0].wall_time for events in map(logged_losses, runs) if events)


def fal_ablations(config, teacher: Path, data: Path, out: Path, options: FrequencyOptions) -> list[tuple[str, Path]]:
    """Two runs that separate what FAL's pseudo labels add from what its budget split costs:
    "student on GT only": the teacher fine-tuned exactly like the student but without pseudo labels;
    "FlexEvent regime": a teacher trained with the fusion model's whole budget, then the student on top."""
    gt_only = apply_overrides(apply_recipe(fal_base(config), "student", init=str(teacher)), {"data.labels": "sparse"})
    gt_only_checkpoint = train_or_reuse(gt_only, data, out / "ablations" / "student_gt_only")
    regime = apply_overrides(config, {"optim.steps": config.optim.steps + config.fal.student.steps})
    chain = run_fal_chain(fal_base(regime), data, out / "ablations" / "flexevent_regime", eval_split=None,
                          progress=options.progress)
    return [("student on GT only", gt_only_checkpoint), ("FlexEvent regime: student", chain.student),
            ("FlexEvent regime: teacher", chain.teacher)]


def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per (model, rate): AP and AP50 averaged over seeds, with the seeds' AP spread (max - min, in AP
    points, as text for the table)."""
    grouped: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["model"], float(row["rate_hz"])), []).append(row)
    means = []
    for (model, rate), group in grouped.items():
        aps = [float(r["AP"]) for r in group if r.get("AP") is not None]
        means.append({"model": model, "rate_hz": rate, "seeds": len(group),
                      "AP": float(np.mean(aps)) if aps else None,
                      "AP50": float(np.mean([float(r["AP50"]) for r in group if r.get("AP50") is not None]))
                      if aps else None,
                      "AP spread": f"{100.0 * (np.max(aps) - np.min(aps)):.2f}" if aps else None})
    return means


def write_frequency(out: Path, rows: list[dict], options: FrequencyOptions, timings: dict[str, float],
                    extra: dict | None = None) -> None:
    """frequency.json (every seed's rows), frequency.md (means over seeds), frequency.png, learning_curves.png
    and README.md (table, verdicts, FAL teacher, pseudo-label quality, ablations, settings, wall time)."""
    extra = extra or {}
    write_metrics_json(out / "frequency.json", rows)
    means = mean_rows(rows)
    table = metrics_markdown(means, ["model", "rate_hz", "seeds", "AP", "AP spread", "AP50"])
    atomic_write_text(out / "frequency.md", table)
    plot_ap_vs_rate(out / "frequency.png", means)
    sections = ""
    if extra.get("teacher"):
        sections += ("\n## The FAL teacher (not a compared model)\nThe student's starting point, trained on the last "
                     "half of each label interval with the teacher's share of the budget:\n\n"
                     + metrics_markdown(mean_rows(extra["teacher"]), ["model", "rate_hz", "AP", "AP50"]) + "\n")
    if extra.get("pseudo"):
        sections += ("\n## FAL pseudo labels against the exact dense ground truth\nAt the in-between instants of the "
                     "training split, greedy same-class matching at IoU >= 0.5:\n\n"
                     + _quality_markdown(extra["pseudo"]) + "\n")
    if extra.get("ablations"):
        sections += ("\n## FAL ablations\nThe FAL teacher fine-tuned like the student on GT only (what the pseudo "
                     "labels add), and FlexEvent's regime: a teacher with the fusion model's whole budget, the "
                     "student on top (the budget split's cost):\n\n"
                     + metrics_markdown(extra["ablations"], ["model", "rate_hz", "AP", "AP50"]) + "\n")
    costs = {(r["model"], float(r["rate_hz"])): r for r in rows if "states" in r}
    if costs:
        lines = ["| model | rate_hz | states held | state memory (kB) | network steps per output | latency |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {model} | {rate:g} | {r['states']} | {r['state_kB']:g} | 1 | one step |"
                  for (model, rate), r in costs.items()]
        sections += ("\n## Schedules' costs\nThe chains schedule holds one recurrent state per output period within "
                     "the trained window (frame maps included in its memory) and runs one network step per output, as "
                     "the stream does; its latency is one step:\n\n" + "\n".join(lines) + "\n")
    if extra.get("curves"):
        plot_learning_curves(out / "learning_curves.png", extra["curves"])
        sections += "\n## Learning curves\nTraining loss (total) per logged step:\n\n![curves](learning_curves.png)\n"
    times = ("Training and evaluation times are each run's own (its log and evaluation cache), also for runs reused "
             "from an earlier invocation; `total` is this invocation's.\n\n"
             + "\n".join(f"- {name}: {seconds / 60:.1f} min" for name, seconds in timings.items()))
    checks = "\n".join(f"- {line}" for line in expectations(means, rows))
    atomic_write_text(out / "README.md", (
        "# flexdet experiment frequency\n\n"
        f"Synthetic preset `{options.synth_preset}` (fast objects), budget `{options.budget}` "
        f"(recipe `frequency_{options.budget}`, overrides {options.overrides or 'none'}), seeds "
        f"{', '.join(str(s) for s in options.seeds)}. Every model is trained on 20 Hz labels with the same number "
        "of optimiser steps (FAL: teacher + student) and evaluated on the test split as a continuous stream at each "
        "rate, every step scored against the exact dense ground truth. Model names: `-s5` S5 recurrence, `+mr` "
        "multi-rate clips (sparse labels), `+fal` frequency-adjusted labels, `@chains` the same trained model run by "
        "the chains schedule with the freshest frame (every step on the trained window; the stream's window is "
        "1/rate). AP is the mean over seeds, "
        "`AP spread` the seeds' max - min.\n\n"
        f"{table}\n![AP vs rate](frequency.png)\n\n## Expectations\n{checks}\n{sections}\n## Wall time\n{times}\n"))
    print(table)
    print("\n".join(expectations(means, rows)))
    print(f"experiment done in {timings['total'] / 60:.1f} min; {out / 'README.md'}")


def _quality_markdown(rows: list[dict]) -> str:
    lines = ["| model | seed | instants | pseudo boxes | true boxes | precision | recall | mean IoU |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row[k]:.3f}" if row.get(k) is not None else "-" for k in ("precision", "recall", "mean_iou")]
        lines.append(f"| {row['model']} | {row['seed']} | {row['instants']} | {row['pseudo_boxes']} | "
                     f"{row['true_boxes']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_learning_curves(path: Path, runs: dict[str, Path]) -> None:
    """PNG of the logged total training loss against step for each run folder's TensorBoard log."""
    figure = Figure(figsize=(8, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    plotted = False
    for label, run in runs.items():
        events = logged_losses(run)
        if not events:
            continue
        axis.plot([e.step for e in events], [e.value for e in events], label=label, linewidth=1)
        plotted = plotted or len(events) > 1
    axis.set_xlabel("optimiser step")
    axis.set_ylabel("training loss (total)")
    if plotted:  # runs shorter than two log intervals have no curve to scale
        axis.set_yscale("log")
        axis.legend(fontsize=7)
    axis.grid(True, alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def expectations(rows: list[dict], seed_rows: list[dict] | None = None) -> list[str]:
    """Claims checked on the rows (means over seeds): fusion beats each single modality at every rate; FAL's gain
    at the highest rate and cost at the lowest against fusion; and for every other model the bar, AP at the lowest
    rate at most TARGET_LOW_MARGIN_AP below fusion's with a drop to the highest rate of at most TARGET_DROP_AP, on
    every seed of `seed_rows` (each seed against fusion's same seed) or on the means."""
    ap = _ap_by(rows, ())
    rates = sorted({key[-1] for key in ap})
    lines = []
    for single in ("events", "frames"):
        pairs = [(r, ap[("fusion", r)] - ap[(single, r)]) for r in rates if ("fusion", r) in ap and (single, r) in ap]
        if pairs:
            verdict = "yes" if all(d > 0 for _, d in pairs) else "NO"
            lines.append(f"fusion beats {single} at every rate: {verdict} (AP difference "
                         + ", ".join(f"{r:g} Hz {d:+.2f}" for r, d in pairs) + ")")
    if rates and all(("fusion", r) in ap and ("fusion+fal", r) in ap for r in (rates[0], rates[-1])):
        high = ap[("fusion+fal", rates[-1])] - ap[("fusion", rates[-1])]
        low = ap[("fusion+fal", rates[0])] - ap[("fusion", rates[0])]
        lines.append(f"FAL gain at {rates[-1]:g} Hz >= +2 AP: {'yes' if high >= 2 else 'NO'} ({high:+.2f})")
        lines.append(f"FAL cost at {rates[0]:g} Hz <= 1 AP: {'yes' if low >= -1 else 'NO'} ({low:+.2f})")
    if len(rates) > 1 and ("fusion", rates[0]) in ap:
        low, high = rates[0], rates[-1]
        per_seed = _ap_by(seed_rows or [], ("seed",))
        seeds = sorted({key[1] for key in per_seed})
        for model in dict.fromkeys(key[0] for key in ap):
            if model in ("fusion", "events", "frames") or (model, low) not in ap or (model, high) not in ap:
                continue
            checks = [(f"seed {seed}", _bar(per_seed, model, low, high, (seed,))) for seed in seeds
                      if (model, seed, low) in per_seed and ("fusion", seed, low) in per_seed] \
                or [("mean", _bar(ap, model, low, high, ()))]
            meets = all(ok for _, (ok, _) in checks)
            lines.append(f"{model}: {low:g} Hz AP >= fusion's - {TARGET_LOW_MARGIN_AP:g} and drop to {high:g} Hz <= "
                         f"{TARGET_DROP_AP:g} AP: {'yes' if meets else 'NO'} ("
                         + "; ".join(f"{who}: {text}" for who, (_, text) in checks) + ")")
    return lines


def _ap_by(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, float]:
    """AP in % keyed by (model, *keys, rate)."""
    return {(row["model"], *(row.get(k) for k in keys), float(row["rate_hz"])): 100.0 * float(row["AP"]) for row in rows
            if row.get("AP") is not None}


def _bar(ap: dict[tuple, float], model: str, low: float, high: float, key: tuple) -> tuple[bool, str]:
    """Whether `model` meets the bar against fusion under `key` (a seed, or none for means), and the figures."""
    ours, fusion = ap[(model, *key, low)], ap[("fusion", *key, low)]
    drop = ours - ap[(model, *key, high)]
    meets = drop <= TARGET_DROP_AP and ours >= fusion - TARGET_LOW_MARGIN_AP
    fusion_drop = f"; fusion's drop {fusion - ap[('fusion', *key, high)]:+.2f}" if ("fusion", *key, high) in ap else ""
    return meets, f"{ours:.2f} vs fusion {fusion:.2f}, drop {drop:+.2f}{fusion_drop}"
