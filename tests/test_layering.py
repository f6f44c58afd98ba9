"""Package layering: data flows one way (files -> events -> datasets -> models -> evaluation -> training ->
workflows -> commands), so no module imports a package above its own, and `flexdet score` (scoring other tools'
files) loads no training code and no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from test_score_inputs import gen1_case

PACKAGE = Path(__file__).resolve().parents[1] / "flexdet"
# Lowest first: a module may import its own package and those before it.
LAYERS = ("errors", "lazy", "atomic", "progress", "config", "data", "datasets", "models", "export", "evaluation",
          "fal", "training", "convert", "workflows", "demo", "serving", "commands", "cli")


def upward_imports(root: Path) -> list[str]:
    """`file:line: package -> module` for every import of a flexdet package above the importing one."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    found = []
    for path in sorted(root.rglob("*.py")):
        layer = path.relative_to(root).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                parts = (name or "").split(".")
                if parts[0] == "flexdet" and len(parts) > 1 and rank.get(parts[1], -1) > rank.get(layer, len(LAYERS)):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {layer} -> {name}")
    return found


def test_every_package_is_in_a_layer():
    packages = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert packages - {"__main__"} <= set(LAYERS), sorted(packages - set(LAYERS))


def test_no_package_imports_one_above_it():
    assert upward_imports(PACKAGE) == []


def test_the_check_finds_an_upward_import(tmp_path):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "x.py").write_text("from flexdet.training.trainer import Trainer\n")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "y.py").write_text("from flexdet.datasets import open_dataset\n")
    assert upward_imports(tmp_path) == ["datasets/x.py:1: datasets -> flexdet.training.trainer"]


def test_score_loads_no_training_code_and_no_torch(tmp_path):
    labels, predictions = gen1_case(tmp_path)
    script = ("import sys; from flexdet.cli import main\n"
              f"code = main(['score', '--benchmark', 'gen1', '--labels', {str(labels)!r}, '--predictions', "
              f"{str(predictions)!r}, '--json'])\n"
              "loaded = sorted(m for m in sys.modules if m.startswith('flexdet.training') or m == 'torch')\n"
              "print('LOADED', code, loaded, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "LOADED 0 []" in done.stderr, done.stderr[-2000:]
