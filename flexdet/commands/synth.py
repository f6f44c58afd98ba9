"""Generate a synthetic event (+ RGB) detection dataset in the DSEC-Det or Gen1 layout, with exact boxes at
the label rate and every millisecond. Same seed, same bytes."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet synth`; unset options keep the preset's values."""
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--preset", default="quickstart", help="quickstart | dsec | gen1 | path to a YAML file")
    parser.add_argument("--difficulty", choices=["easy", "medium", "hard"], help="scene dynamics and noise")
    parser.add_argument("--layout", choices=["dsec", "gen1"])
    parser.add_argument("--sequences", type=int, help="number of sequences (too few for the preset's train / "
                                                       "val / test split: train first, then test, then val)")
    parser.add_argument("--duration", type=float, help="seconds per sequence")
    parser.add_argument("--size", help="sensor size WxH, e.g. 320x240")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--label-rate", type=float, help="label rate in Hz (must divide the frame rate)")
    parser.add_argument("--frame-rate", type=float, help="RGB frame rate in Hz")
    parser.add_argument("--classes", help="comma-separated subset of car,pedestrian")
    parser.add_argument("--split", help="train,val,test fractions, e.g. 0.7,0.15,0.15")
    parser.add_argument("--workers", type=int, help="parallel processes (one sequence each)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set sensor.noise_rate_hz=0.2 (repeatable)")
    parser.add_argument("--preview", help="also save a PNG of one frame of the first sequence, its next 50 ms of events and boxes")


def build_config(args: argparse.Namespace):
    """The SynthConfig the options describe: preset, then difficulty, then flags, then --set overrides."""
    from flexdet.config import apply_overrides
    from flexdet.data.synthetic.config import load_preset
    from flexdet.errors import ConfigError

    config = load_preset(args.preset, args.difficulty)
    overrides: dict = {}
    if args.size:
        try:
            width, height = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size {args.size!r}: expected WxH, e.g. 320x240") from None
        overrides.update({"scene.width": width, "scene.height": height})
    flags = (("layout", "dataset.layout"), ("sequences", "dataset.sequences"), ("duration", "scene.duration_s"),
             ("seed", "dataset.seed"), ("label_rate", "labels.rate_hz"), ("frame_rate", "frames.rate_hz"),
             ("workers", "dataset.workers"))
    for flag, key in flags:
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.classes:
        overrides["scene.objects.classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.split:
        try:
            overrides["dataset.split"] = [float(v) for v in args.split.split(",")]
        except ValueError:
            raise ConfigError(f"--split {args.split!r}: expected three comma-separated fractions") from None
    config = apply_overrides(config, overrides)
    config = apply_overrides(config, args.set) if args.set else config
    return config if args.split or any(o.startswith("dataset.split=") for o in args.set) else fill_splits(config)


def fill_splits(config):
    """The config with its preset's split replaced, when too few sequences leave a split empty, by one that
    fills them (`filled_split`), said on stderr; an explicit --split is kept (and refused if it cannot be met)."""
    import sys

    from flexdet.config import apply_overrides
    from flexdet.data.synthetic.dataset import SPLITS, filled_split, split_sizes

    count, split = config.dataset.sequences, config.dataset.split
    filled = filled_split(count, split)
    if filled is None:
        return config
    config = apply_overrides(config, {"dataset.split": filled})
    sizes = split_sizes(count, filled)
    placed = ", ".join(f"{size} in {name}" for name, size in zip(SPLITS, sizes) if size)
    missing = ", ".join(name for name, fraction, size in zip(SPLITS, split, sizes) if fraction > 0 and not size)
    wanted = sum(1 for f in split if f > 0)
    said = (f"note: {count} sequence(s) cannot follow the preset's train/val/test split {[float(f) for f in split]} "
            f"without an empty split: {placed}")
    if missing:
        said += f", none in {missing} ({wanted} or more sequences fill every split)"
    if sizes[2] == 0:
        said += "; `flexdet eval --split train` scores the train sequences"
    print(said, file=sys.stderr)
    return config


def run(args: argparse.Namespace) -> int:
    """Generate the dataset with a progress bar; print where it went."""
    from pathlib import Path

    from flexdet.data.synthetic.dataset import generate_dataset, plan_sequences
    from flexdet.progress import progress_bar

    config = build_config(args)
    with progress_bar(total=config.dataset.sequences, unit="seq", desc="synth") as bar:
        generate_dataset(args.out, config, progress=lambda plan: bar.update(1))
    if args.preview:
        from flexdet.data.synthetic.preview import save_preview
        from flexdet.data.synthetic.simulate import simulate_sequence

        sequence = simulate_sequence(config, plan_sequences(config)[0].seed)
        save_preview(sequence, args.preview)
    print(f"wrote {config.dataset.sequences} {config.dataset.layout} sequences to {Path(args.out)} "
          f"(see {Path(args.out) / 'dataset.yaml'})")
    return 0
