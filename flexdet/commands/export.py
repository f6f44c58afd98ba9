"""Export a model for deployment: model.pt (checkpoint), model.onnx (one streaming step, recurrent state as
explicit inputs/outputs, metadata inside), frame_encoder.onnx for fused models, metadata.json and, with
--engine, TensorRT engines. A checkpoint's input specification gives the size, window and geometry; from a
preset the weights are random (seeded), for benchmarking, at the size given."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet export`."""
    parser.add_argument("checkpoint", nargs="?", help="any flexdet checkpoint (training, model.pt, export folder)")
    parser.add_argument("--preset", help="export a preset (nano/tiny/small/base) with random seeded weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (--preset)")
    parser.add_argument("--num-classes", type=int, default=2, help="classes of the preset model")
    parser.add_argument("--frames", action=argparse.BooleanOptionalAction, default=False,
                        help="preset with the RGB frame branch (fused) or event-only")
    parser.add_argument("--classes", help="comma-separated class names (default: the checkpoint's, else class_K)")
    parser.add_argument("--height", type=int, help="sensor height in px (--preset only; default 240)")
    parser.add_argument("--width", type=int, help="sensor width in px (--preset only; default 304)")
    parser.add_argument("--window-us", type=int, default=None,
                        help="event window per step (default: the checkpoint's, 50000 for a preset)")
    parser.add_argument("--out", required=True, help="output folder (refused if it already holds an export)")
    parser.add_argument("--overwrite", action="store_true", help="replace the export an existing --out holds")
    parser.add_argument("--fp16", action="store_true", help="half-precision graph (export on a CUDA device)")
    parser.add_argument("--target", choices=("any", "cpu"), default="any",
                        help="cpu: also write model_cpu.onnx (onnxruntime's optimised float32 graph, outputs checked "
                             "against model.onnx) and cpu.json (the thread settings that ran it fastest on this "
                             "machine); onnxruntime on a CPU (bench, demo, eval's runtime) then loads it. "
                             "Default any: the portable model.onnx only")
    parser.add_argument("--engine", action="store_true", help="also build TensorRT engines (needs tensorrt)")
    parser.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17 for LayerNormalization)")
    parser.add_argument("--device", default=None, help="device to trace on (default: cuda with --fp16, else cpu)")


def run(args: argparse.Namespace) -> int:
    """Build or load the model, then write every artifact into --out."""
    import torch

    from flexdet.atomic import require_output_dir
    from flexdet.errors import ConfigError
    from flexdet.export.bundle import export_bundle
    from flexdet.export.metadata import metadata_for_model

    require_output_dir(args.out)
    _refuse_existing_export(args.out, args.overwrite)
    if bool(args.checkpoint) == bool(args.preset):
        raise ConfigError("give either a CHECKPOINT or --preset NAME")
    device = args.device or ("cuda" if args.fp16 and torch.cuda.is_available() else "cpu")
    if args.fp16 and not str(device).startswith("cuda"):
        raise ConfigError(f"--fp16: a half-precision graph is traced on a CUDA device and runs fast only on a GPU "
                          f"(TensorRT, onnxruntime CUDA); the device here is {device}. Export float32 (leave out "
                          f"--fp16), or run this on a machine with a GPU")
    if args.target == "cpu" and (args.fp16 or args.engine):
        raise ConfigError("--target cpu writes a float32 CPU model; leave out --fp16 / --engine (GPU artifacts)")
    if args.opset < 17:
        raise ConfigError(f"--opset {args.opset}: flexdet exports at opset >= 17 (LayerNormalization)")
    classes = args.classes.split(",") if args.classes else None
    if args.checkpoint:
        from flexdet.models.checkpoint import load_model

        if args.height or args.width:
            raise ConfigError("--height / --width apply to --preset only: a checkpoint's input specification "
                              "gives its size")
        loaded = load_model(args.checkpoint)
        model, spec, classes = loaded.model, loaded.require_spec(), classes or loaded.classes
    else:
        from flexdet.models.builder import random_preset

        model, spec = random_preset(args.preset, args.num_classes, args.frames, args.seed, args.height or 240,
                                    args.width or 304)
    if args.window_us:
        spec = spec.replace(window_us=args.window_us)
    metadata = metadata_for_model(model.eval(), spec, classes)
    written = export_bundle(model.eval(), metadata, args.out, opset=args.opset, fp16=args.fp16,
                            dynamic_batch=args.dynamic_batch, engine=args.engine, device=device)
    if args.target == "cpu":
        from pathlib import Path

        from flexdet.export.cpu import CPU_CHOICE_NAME, write_cpu_variant

        choice = write_cpu_variant(args.out, metadata)
        written["cpu_model"] = Path(args.out) / choice["model"]
        timings = ", ".join(f"{name} {ms:.1f} ms" for name, ms in choice["inference_ms"].items())
        written["cpu_choice"] = Path(args.out) / CPU_CHOICE_NAME
        print(f"CPU model: {choice['chosen']} fastest here ({timings} per step)")
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def _refuse_existing_export(out: str, overwrite: bool) -> None:
    """Like `flexdet train`: an --out that already holds an export is replaced only with --overwrite."""
    from pathlib import Path

    from flexdet.errors import ConfigError
    from flexdet.export.bundle import CHECKPOINT_NAME, METADATA_NAME, ONNX_NAME

    held = [name for name in (METADATA_NAME, ONNX_NAME, CHECKPOINT_NAME) if (Path(out) / name).exists()]
    if held and not overwrite:
        raise ConfigError(f"{out} already holds an export ({', '.join(held)}); replace it with --overwrite, or "
                          f"choose another --out")
