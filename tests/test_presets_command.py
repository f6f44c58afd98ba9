"""`flexdet presets` lists every shipped preset with its summary line, and the README's table is its output."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from flexdet.cli import main
from flexdet.commands.presets import KINDS, describe, preset_files

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_shipped_yaml_is_listed_with_a_one_line_summary(capsys):
    assert main(["presets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    files = preset_files()
    assert {r["kind"] for r in rows} == set(KINDS)
    for kind, paths in files.items():
        assert paths, kind
        assert sorted(r["name"] for r in rows if r["kind"] == kind) == sorted(p.stem for p in paths)
    for path in (p for paths in files.values() for p in paths):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
        summary = describe(path)
        assert summary and len(summary) <= 110, f"{path}: the first line must be a '# summary.' comment"


def test_summary_is_the_first_comment_line_without_the_name(tmp_path):
    (tmp_path / "fast.yaml").write_text("# fast: a quick recipe.\n# more detail\noptim: {steps: 2}\n")
    (tmp_path / "bare.yaml").write_text("optim: {steps: 2}\n# late comment\n")
    assert describe(tmp_path / "fast.yaml") == "a quick recipe"
    assert describe(tmp_path / "bare.yaml") == ""


def test_readme_presets_table_is_the_commands_output(capsys):
    assert main(["presets", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    assert table in README.read_text(encoding="utf-8"), "README's presets table is stale: paste `flexdet presets --markdown`"


def test_parameter_counts_the_presets_state_are_the_built_models():
    """A summary's "about X M params event-only" is the model build_model makes (they once said 4.4 / 18.5 M where
    the models have 4.49 / 18.88 M), and so are the counts in the README's models paragraph."""
    import re

    from flexdet.models import build_model

    def built(name: str) -> float:
        model = build_model(name, num_classes=2, use_frames=False)
        return sum(t.numel() for t in model.parameters()) / 1e6

    stated = {path.stem: float(m.group(1)) for path in preset_files()["model size"]
              if (m := re.search(r"about ([\d.]+) M params event-only", describe(path)))}
    assert set(stated) >= {"tiny", "base"}
    for name, millions in stated.items():
        assert abs(built(name) - millions) < 0.051, name
    paragraph = README.read_text()
    for name in ("tiny", "small", "base"):
        millions = float(re.search(rf"`{name}` \(([\d.]+) M", paragraph).group(1))
        assert abs(built(name) - millions) < 0.051, name
