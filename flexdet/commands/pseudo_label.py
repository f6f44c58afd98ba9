"""Write FlexTune pseudo labels for a dataset split: a teacher checkpoint runs forward and time-reversed at
`--factor` times the label rate; confident, tracked boxes at the in-between instants are written with the
ground truth to `<seq>/object_detections/left/pseudo_tracks.npy` (class_confidence = teacher score).
`--rule flextune` builds them as FlexEvent does (its grid, postprocess, thresholds and tracker)."""

from __future__ import annotations

import argparse

from flexdet.commands import DeprecatedAlias


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet pseudo-label`."""
    parser.add_argument("checkpoint", help="teacher: any flexdet checkpoint (training, model.pt, export folder)")
    parser.add_argument("--data", required=True, help="dataset folder (synthetic, DSEC-Det or Gen1 layout)")
    parser.add_argument("--split", default="train", help="split to pseudo-label (default: train)")
    parser.add_argument("--factor", type=int, default=None, help="teacher steps per label interval (default 2)")
    parser.add_argument("--rule", choices=("flexdet", "flextune"), default=None,
                        help="flexdet: flexdet's chain (default); flextune: FlexEvent's own labels (uniform grid "
                             "over the frame times, class-probability scores, its size filter and tracker)")
    parser.add_argument("--config", default=None, help="YAML file of FALConfig fields (thresholds, tracker)")
    parser.add_argument("--threshold", type=float, default=None, help="confidence a box must exceed (default 0.6)")
    parser.add_argument("--class-threshold", action="append", default=[], metavar="CLASS=VALUE",
                        help="per-class threshold on evaluated class ids, repeatable (e.g. 1=0.7)")
    parser.add_argument("--nms", type=float, default=None, help="class-wise NMS IoU when merging directions")
    parser.add_argument("--forward-only", action="store_true", help="skip the time-reversed teacher pass")
    parser.add_argument("--benchmark", default=None,
                        help="benchmark rules (class map, filters) override: gen1, 1mpx, dsec2, dsec8 (default: "
                             "the checkpoint's)")
    parser.add_argument("--protocol", dest="benchmark", action=DeprecatedAlias, new_flag="--benchmark",
                        help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from flexdet.config import apply_overrides, load_yaml
    from flexdet.fal.config import FALConfig
    from flexdet.fal.generate import pseudo_label_checkpoint

    config = load_yaml(FALConfig, args.config) if args.config else FALConfig()
    overrides = {"factor": args.factor, "confidence_threshold": args.threshold, "nms_iou": args.nms,
                 "rule": args.rule}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.class_threshold:
        overrides["class_thresholds"] = {**config.class_thresholds, **_class_thresholds(args.class_threshold)}
    if args.forward_only:
        overrides["both_directions"] = False
    config = apply_overrides(config, overrides) if overrides else config
    written = pseudo_label_checkpoint(args.checkpoint, args.data, args.split, config, args.benchmark, args.device,
                                      not args.no_progress)
    for path in written:
        print(path)
    print(f"wrote {config.rule} pseudo labels for {len(written)} sequence(s) at {config.factor}x the label rate")
    return 0


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
