"""Export a model for deployment: model.pt (checkpoint), model.onnx (one streaming step, recurrent state as
explicit inputs/outputs, metadata inside), frame_encoder.onnx for fused models, metadata.json and, with
--engine, TensorRT engines. From a preset the weights are random (seeded), for benchmarking."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet export`."""
    parser.add_argument("checkpoint", nargs="?", help="checkpoint (.pt) to export")
    parser.add_argument("--preset", help="export a preset (nano/tiny/small/base) with random seeded weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (--preset)")
    parser.add_argument("--num-classes", type=int, default=2, help="classes of the preset model")
    parser.add_argument("--frames", action=argparse.BooleanOptionalAction, default=False,
                        help="preset with the RGB frame branch (fused) or event-only")
    parser.add_argument("--classes", help="comma-separated class names (default: class_0, class_1, ...)")
    parser.add_argument("--height", type=int, help="input height in px (default: the checkpoint's)")
    parser.add_argument("--width", type=int, help="input width in px (default: the checkpoint's)")
    parser.add_argument("--window-us", type=int, default=None, help="event window per step (default 50000)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--fp16", action="store_true", help="half-precision graph (export on a CUDA device)")
    parser.add_argument("--engine", action="store_true", help="also build TensorRT engines (needs tensorrt)")
    parser.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17 for LayerNormalization)")
    parser.add_argument("--device", default=None, help="device to trace on (default: cuda with --fp16, else cpu)")


def run(args: argparse.Namespace) -> int:
    """Build or load the model, then write every artifact into --out."""
    import dataclasses

    import torch

    from flexdet.errors import ConfigError
    from flexdet.export.bundle import export_bundle
    from flexdet.export.metadata import metadata_for_model

    if bool(args.checkpoint) == bool(args.preset):
        raise ConfigError("give either a CHECKPOINT or --preset NAME")
    if args.opset < 17:
        raise ConfigError(f"--opset {args.opset}: flexdet exports at opset >= 17 (LayerNormalization)")
    classes = args.classes.split(",") if args.classes else None
    sized = {k: v for k, v in (("height", args.height), ("width", args.width)) if v}
    if args.checkpoint:
        from flexdet.export.checkpoint import load_checkpoint

        model, metadata = load_checkpoint(args.checkpoint)
    else:
        from flexdet.models import build_model

        torch.manual_seed(args.seed)
        model, metadata = build_model(args.preset, num_classes=args.num_classes, use_frames=args.frames), None
    if metadata is None:
        if len(sized) != 2:
            raise ConfigError("--height and --width are required (the model has no deploy metadata)")
        metadata = metadata_for_model(model.eval(), classes=classes, window_us=args.window_us or 50_000, **sized)
    else:
        changes = {**sized, **({"classes": classes} if classes else {}),
                   **({"window_us": args.window_us} if args.window_us else {})}
        metadata = dataclasses.replace(metadata, **changes)
    device = args.device or ("cuda" if args.fp16 and torch.cuda.is_available() else "cpu")
    written = export_bundle(model.eval(), metadata, args.out, opset=args.opset, fp16=args.fp16,
                            dynamic_batch=args.dynamic_batch, engine=args.engine, device=device)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
