"""Convert a published checkpoint into a flexdet model.pt: RVT-T/S/B or SSM's S5-ViT-S/B, for Gen1 or 1 Mpx, or
FlexEvent's DSEC-Det models (2 or 8 classes), read without running any pickled code; model, size and dataset are
detected from the file. The result loads
like any flexdet model (demo, eval, export) with RVT's input rule and post-processing recorded in it."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet convert`."""
    parser.add_argument("checkpoint", help="the published checkpoint (RVT's or SSM's .ckpt, FlexEvent's .pth)")
    parser.add_argument("--out", required=True, help="output folder: OUT/model.pt (then flexdet export OUT ...)")


def run(args: argparse.Namespace) -> int:
    """Convert, save with the input specification and class names, print what was found."""
    from flexdet.atomic import require_output_dir
    from flexdet.convert import convert_checkpoint
    from flexdet.models.checkpoint import MODEL_FILE, save_model

    out = require_output_dir(args.out)
    converted, input_spec = convert_checkpoint(args.checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    path = save_model(out / MODEL_FILE, converted.model, input_spec, converted.class_names)
    spec = converted.input
    print(f"{converted.source} ({converted.dataset}, classes {', '.join(converted.class_names)}) -> {path}")
    print(f"input: {spec['bins']} bins x 2 polarities of {spec['window_us'] // 1000} ms, clip {spec['clip']}, "
          f"{spec['input_hw'][1]}x{spec['input_hw'][0]} padded to {spec['padded_hw'][1]}x{spec['padded_hw'][0]}")
    if input_spec.dual_windows:
        print(f"second view: {input_spec.sub_window} sub-window of {input_spec.sub_window_ratio:g} x the window "
              f"(seed {input_spec.sub_window_seed}); frames: {input_spec.geometry.frame_resize} resize of the top "
              f"{input_spec.geometry.kept_height} rows; events: {input_spec.geometry.event_downscale} downscale")
    print(f"post-processing: confidence {converted.postprocess['conf_thresh']} (RVT's evaluation uses "
          f"{converted.postprocess['eval_conf_thresh']}), NMS {converted.postprocess['nms_thresh']}")
    return 0
