"""Describe an event recording: format, sensor size, event count, time span, mean event rate, frames and
labels present. `--json` prints one JSON object with those keys."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet info`."""
    parser.add_argument("path", help="recording file, or a DSEC / RVT sequence folder")
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
    """Print the description of `args.path`."""
    facts = describe(args.path, args.width, args.height)
    print(json.dumps(facts) if args.json else format_text(facts))
    return 0
