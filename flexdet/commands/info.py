"""Describe an event recording (format, sensor size, event count, time span, mean event rate, frames and
labels present) or a flexdet model (a checkpoint, run folder or export folder: what it is, the model, its classes
and the input it expects). `--json` prints one JSON object with those keys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet info`."""
    parser.add_argument("path", help="recording file, a DSEC / RVT sequence folder, or a checkpoint (.pt), run "
                                     "folder or export folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--width", type=int, default=None, help="sensor width (overrides the file)")
    parser.add_argument("--height", type=int, default=None, help="sensor height (overrides the file)")


def describe(path: str, width: int | None = None, height: int | None = None) -> dict:
    """The facts `flexdet info` prints, as a JSON-ready dict (width/height None when unknown)."""
    from flexdet.data.readers import open_recording

    with open_recording(path, width=width, height=height) as recording:
        known = recording.sensor_size_known
        duration = recording.t_end - recording.t_start
        events = recording.num_events
        return {
            "path": str(recording.path),
            "format": recording.format,
            "width": recording.width if known else None,
            "height": recording.height if known else None,
            "size_source": recording.size_source,
            "coordinate_extent": list(recording.coordinate_extent) if recording.coordinate_extent else None,
            "num_events": events,
            "t_start": recording.t_start,
            "t_end": recording.t_end,
            "duration_s": duration / 1e6,
            "mean_event_rate_hz": (events / (duration / 1e6)) if events and duration > 0 else None,
            "time_corrections": recording.time_corrections,
            "has_frames": recording.has_frames,
            "has_labels": recording.has_labels,
        }


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".onnx", ".engine", ".plan")


def is_model_path(path: str) -> bool:
    """A checkpoint or model file (by its suffix), a training run folder or an export folder (`model.pt`)."""
    from flexdet.models.checkpoint import MODEL_FILE, run_checkpoint

    file = Path(path)
    if file.is_dir():
        return run_checkpoint(file).is_file() or (file / MODEL_FILE).is_file()
    return file.suffix.lower() in CHECKPOINT_SUFFIXES


def describe_model(path: str) -> dict:
    """What `flexdet info` prints for a model: the artefact read (a run or export folder means its checkpoint),
    its kind, the model (size preset, inputs, classes, parameters), the input it expects and, for a training
    checkpoint, the step reached and the data it was trained on. A file that is not a flexdet checkpoint raises
    the loader's CheckpointError (naming the file, and `flexdet convert` for a published one)."""
    from flexdet.datasets.benchmarks import stored_benchmark
    from flexdet.errors import CheckpointError
    from flexdet.models.checkpoint import load_model

    try:
        loaded = load_model(path)
    except CheckpointError as exc:
        if Path(path).is_dir():
            raise
        raise CheckpointError(f"{exc} (a published RVT, SSM S5 or FlexEvent checkpoint is read by `flexdet convert "
                              f"{path} --out DIR`, after which `flexdet info DIR` describes it)") from exc
    config, spec = loaded.model.config, loaded.spec
    inputs = "fusion" if config.use_frames and config.use_events else "frames" if config.use_frames else "events"
    facts = {
        "path": str(loaded.path),
        "kind": "flexdet training checkpoint" if loaded.train_config is not None else "flexdet model",
        "model": config.preset,
        "inputs": inputs,
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "classes": list(loaded.classes),
        "input": None,
    }
    if spec is not None:
        geometry = spec.geometry
        facts["input"] = {"width": spec.size[0], "height": spec.size[1], "sensor_width": geometry.sensor_width,
                          "sensor_height": geometry.sensor_height, "crop_height": geometry.crop_height,
                          "scale": geometry.scale, "representation": spec.representation, "bins": spec.bins,
                          "window_us": spec.window_us, "time_norm": spec.time_norm,
                          "frame_rule": spec.frame_rule if config.use_frames else None}
    if loaded.train_config is not None:
        optim = loaded.train_config.get("optim", {}) if isinstance(loaded.train_config, dict) else {}
        facts.update(step=loaded.step, steps=optim.get("steps"), data=loaded.dataset.get("root"),
                     layout=loaded.dataset.get("layout"), benchmark=stored_benchmark(loaded.dataset),
                     downsample=loaded.dataset.get("downsample"))
    return facts


def format_model_text(facts: dict) -> str:
    """Human-readable lines for `describe_model`'s dict."""
    spec = facts["input"]
    if spec is None:
        size = "unknown (this checkpoint records no input specification)"
    else:
        crop = f", top {spec['crop_height']} rows" if spec["crop_height"] else ""
        scale = f" / {spec['scale']}" if spec["scale"] > 1 else ""
        size = (f"{spec['width']}x{spec['height']} (sensor {spec['sensor_width']}x{spec['sensor_height']}{crop}{scale}), "
                f"{spec['representation']} of {spec['bins']} bins over {spec['window_us'] / 1000:g} ms windows "
                f"(time_norm {spec['time_norm']})")
        if spec["frame_rule"]:
            size += f", RGB frames ({spec['frame_rule']})"
    inputs = {"fusion": "events + RGB frames", "events": "events only", "frames": "RGB frames only"}[facts["inputs"]]
    lines = [
        ("path", facts["path"]),
        ("kind", facts["kind"]),
        ("model", f"{facts['model']}, {inputs}, {facts['parameters'] / 1e6:.2f} M parameters"),
        ("classes", ", ".join(facts["classes"])),
        ("input", size),
    ]
    if "step" in facts:
        lines.append(("step", f"{facts['step']} of {facts['steps']}"))
        lines.append(("trained on", f"{facts['data']} ({facts['layout']} layout, benchmark {facts['benchmark']}, "
                                    f"downsample {facts['downsample']})"))
    return "\n".join(f"{key:<11} {value}" for key, value in lines)


def format_text(facts: dict) -> str:
    """Human-readable lines for `describe`'s dict."""
    if facts["width"] is None:
        extent = facts["coordinate_extent"]
        seen = f"; events span {extent[0]}x{extent[1]} px" if extent else ""
        size = f"unknown (not in the file; pass --width/--height{seen})"
    else:
        size = f"{facts['width']}x{facts['height']} ({facts['size_source']})"
    rate = facts["mean_event_rate_hz"]
    lines = [
        ("path", facts["path"]),
        ("format", facts["format"]),
        ("sensor", size),
        ("events", "n/a (no raw events)" if facts["num_events"] is None else f"{facts['num_events']:,}"),
        ("t_start", f"{facts['t_start']} us"),
        ("t_end", f"{facts['t_end']} us"),
        ("duration", f"{facts['duration_s']:.6f} s"),
        ("mean rate", "n/a" if rate is None else f"{rate / 1e6:.3f} Mev/s"),
        ("time fixes", f"{facts['time_corrections']} backward timestamps replaced by the running max"),
        ("frames", "yes" if facts["has_frames"] else "no"),
        ("labels", "yes" if facts["has_labels"] else "no"),
    ]
    return "\n".join(f"{key:<11} {value}" for key, value in lines)


def run(args: argparse.Namespace) -> int:
    """Print the description of `args.path` (a recording, or a model: `is_model_path`)."""
    if is_model_path(args.path):
        facts = describe_model(args.path)
        print(json.dumps(facts) if args.json else format_model_text(facts))
        return 0
    facts = describe(args.path, args.width, args.height)
    print(json.dumps(facts) if args.json else format_text(facts))
    return 0
