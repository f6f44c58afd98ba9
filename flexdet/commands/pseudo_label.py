"""Write FlexTune pseudo labels for a dataset split: a teacher checkpoint runs forward and time-reversed at
`--factor` times the label rate; confident, tracked boxes at the in-between instants are written with the
ground truth to `<seq>/object_detections/left/pseudo_tracks.npy` (class_confidence = teacher score)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet pseudo-label`."""
    parser.add_argument("checkpoint", help="teacher checkpoint (a training checkpoint or an exported model.pt)")
    parser.add_argument("--data", required=True, help="dataset folder (synthetic, DSEC-Det or Gen1 layout)")
    parser.add_argument("--split", default="train", help="split to pseudo-label (default: train)")
    parser.add_argument("--factor", type=int, default=None, help="teacher steps per label interval (default 2)")
    parser.add_argument("--config", default=None, help="YAML file of FALConfig fields (thresholds, tracker)")
    parser.add_argument("--threshold", type=float, default=None, help="confidence a box must exceed (default 0.6)")
    parser.add_argument("--class-threshold", action="append", default=[], metavar="CLASS=VALUE",
                        help="per-class threshold on evaluated class ids, repeatable (e.g. 1=0.7)")
    parser.add_argument("--nms", type=float, default=None, help="class-wise NMS IoU when merging directions")
    parser.add_argument("--forward-only", action="store_true", help="skip the time-reversed teacher pass")
    parser.add_argument("--protocol", default=None, help="protocol override (default: the checkpoint's)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from flexdet.config import apply_overrides, load_yaml
    from flexdet.training.fal.config import FALConfig
    from flexdet.training.fal.generate import pseudo_label_dataset

    config = load_yaml(FALConfig, args.config) if args.config else FALConfig()
    overrides = {"factor": args.factor, "confidence_threshold": args.threshold, "nms_iou": args.nms}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.class_threshold:
        overrides["class_thresholds"] = {**config.class_thresholds, **_class_thresholds(args.class_threshold)}
    if args.forward_only:
        overrides["both_directions"] = False
    config = apply_overrides(config, overrides) if overrides else config
    model, layout, protocol, downsample = load_teacher(args.checkpoint)
    written = pseudo_label_dataset(model, args.data, args.split, config, layout, args.protocol or protocol,
                                   downsample, args.device, not args.no_progress)
    for path in written:
        print(path)
    print(f"wrote pseudo labels for {len(written)} sequence(s) at {config.factor}x the label rate")
    return 0


def load_teacher(path: str):
    """(model, layout, protocol, downsample): a training checkpoint brings its data settings; an exported
    model.pt brings weights only (auto layout and protocol, full resolution)."""
    from flexdet.errors import CheckpointError
    from flexdet.export.checkpoint import load_checkpoint
    from flexdet.training.checkpoint import load_detector

    try:
        model, train_config, _, _ = load_detector(path)
        data = train_config.data
        return model, data.layout, data.protocol, data.downsample
    except CheckpointError as exc:
        if "format tag missing" not in str(exc):
            raise
    model, _ = load_checkpoint(path)
    return model, "auto", "auto", 1


def _class_thresholds(items: list[str]) -> dict[int, float]:
    from flexdet.errors import ConfigError

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[int(key)] = float(value)
        except ValueError:
            raise ConfigError(f"--class-threshold {item!r}: expected CLASS=VALUE, e.g. 1=0.7") from None
    return out
