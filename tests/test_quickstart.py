"""`flexdet quickstart` end to end on a tiny synthetic set and a few training steps (the full run is the
closing note's job: 15 minutes on 2 cores)."""

from __future__ import annotations

import json

import pytest
import yaml
from test_datasets import SMALL

from flexdet.cli import main
from flexdet.config import apply_overrides, to_dict
from flexdet.data.boxes import FILE_BOX_DTYPE
from flexdet.data.synthetic import load_preset


@pytest.mark.slow
def test_quickstart_writes_metrics_predictions_plot_and_report(tmp_path):
    preset = tmp_path / "tiny.yaml"
    config = apply_overrides(load_preset("quickstart"), {**SMALL, "scene.duration_s": 0.4})
    preset.write_text(yaml.safe_dump(to_dict(config)))
    from flexdet.workflows.quickstart import QuickstartOptions, run_quickstart

    out = tmp_path / "qs"
    options = QuickstartOptions(rates_hz=(20.0, 90.0), synth_preset=str(preset), progress=False,
                                overrides=["optim.steps=1", "data.batch_size=2", "data.clip_steps=2"])
    rows = run_quickstart(out, options)
    saved = json.loads((out / "metrics.json").read_text())
    assert [(r["model"], r["rate_hz"]) for r in saved] == [(m, r) for m in ("fusion", "events", "frames")
                                                           for r in (20.0, 90.0)]
    assert all(key in saved[0] for key in ("AP", "AP50", "AP75", "APs", "APm", "APl")) and len(rows) == 6
    for rate in ("20hz", "90hz"):
        files = list((out / "fusion" / "predictions" / rate).glob("*.npy"))
        assert files and all(__import__("numpy").load(f).dtype == FILE_BOX_DTYPE for f in files)
    assert not (out / "events" / "predictions").exists()
    assert (out / "ap_vs_rate.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| fusion | 20 |" in report and "| frames | 90 |" in report
    fusion20 = next(r for r in saved if r["model"] == "fusion" and r["rate_hz"] == 20.0)
    assert f"| fusion (events + RGB) | {100 * fusion20['AP']:.1f} / {100 * fusion20['AP50']:.1f} | " in report


def test_rate_table_has_the_readme_layout():
    from flexdet.workflows.quickstart import rate_table

    rows = [{"model": m, "rate_hz": r, "AP": ap, "AP50": ap50} for m, r, ap, ap50 in
            (("fusion", 20.0, 0.397, 0.731), ("fusion", 180.0, 0.402, None), ("frames", 20.0, 0.434, 0.712))]
    assert rate_table(rows).splitlines()[:4] == ["| model | 20 Hz | 180 Hz |", "|---|---|---|",
                                                 "| fusion (events + RGB) | 39.7 / 73.1 | 40.2 / - |",
                                                 "| frames only | 43.4 / 71.2 | - / - |"]


def test_quickstart_cli_rejects_unknown_models(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path), "--models", "fusion,lidar"]) == 2
    assert "--models" in capsys.readouterr().err
