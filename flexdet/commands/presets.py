"""List what `--preset` can name: training recipes (`flexdet train/fal --preset`), model sizes (`model.preset=`),
synthetic scenes (`flexdet synth --preset`) and scene difficulties (`--difficulty`), each with the first line
of its YAML file (the summary comment). `--markdown` prints the README's table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KINDS = ("training recipe", "model size", "synthetic scene", "scene difficulty")
HEADINGS = {"training recipe": "training recipes (--preset)", "model size": "model sizes (model.preset=)",
            "synthetic scene": "synthetic scenes (synth --preset)", "scene difficulty": "scene difficulties (synth --difficulty)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet presets`."""
    parser.add_argument("--json", action="store_true", help="print a JSON list of {kind, name, description, file}")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table (as in the README)")


def preset_files() -> dict[str, list[Path]]:
    """Shipped YAML files per kind, sorted by name."""
    from flexdet.data.synthetic.config import PRESET_DIR as SYNTH_DIR
    from flexdet.models.config import PRESET_DIR as MODEL_DIR
    from flexdet.training.config import RECIPE_DIR

    folders = (RECIPE_DIR, MODEL_DIR, SYNTH_DIR, SYNTH_DIR / "difficulty")
    return {kind: sorted(folder.glob("*.yaml")) for kind, folder in zip(KINDS, folders)}


def describe(path: Path) -> str:
    """The summary of a preset: its file's first line when that is a comment, without '#', a leading
    '<name>:' and the final '.' ('' when the file starts without a comment)."""
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    if not first.startswith("#"):
        return ""
    text = first.lstrip("#").strip().rstrip(".")
    prefix = f"{path.stem}:"
    return text[len(prefix):].strip() if text.startswith(prefix) else text


def list_presets() -> list[dict]:
    """One row per shipped preset: kind, name, description, file (relative to the package)."""
    package = Path(__file__).resolve().parents[1]
    return [{"kind": kind, "name": path.stem, "description": describe(path),
             "file": str(path.relative_to(package))}
            for kind, paths in preset_files().items() for path in paths]


def run(args: argparse.Namespace) -> int:
    rows = list_presets()
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.markdown:
        print("| kind | name | what it is |\n|---|---|---|")
        for row in rows:
            print(f"| {row['kind']} | `{row['name']}` | {row['description']} |")
    else:
        for kind in KINDS:
            print(f"{HEADINGS[kind]}:")
            for row in (r for r in rows if r["kind"] == kind):
                print(f"  {row['name']:<18} {row['description']}")
    return 0
