"""`flexdet info` on every real recording, as text and as JSON, checked against the reference decodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from readers_helpers import REAL_WITH_REFERENCE, real_file, reference

from flexdet.cli import main

EXPECTED = {"evt2_gen3_640x480.raw": ("evt2", 640, 480), "evt3_gen41_1280x720_pedestrians.raw": ("evt3", 1280, 720),
            "ncars_obj_004397_td.dat": ("dat", None, None), "dvxplorer_320x240.aedat4": ("aedat4", 320, 240)}
KEYS = {"format", "width", "height", "num_events", "t_start", "t_end", "duration_s", "mean_event_rate_hz",
        "has_frames", "has_labels"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_info_json(name, capsys):
    assert main(["info", str(real_file(name)), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert KEYS <= set(facts)
    assert (facts["format"], facts["width"], facts["height"]) == EXPECTED[name]
    assert facts["has_frames"] is False and facts["has_labels"] is False
    if name in REAL_WITH_REFERENCE:
        t = reference(name)["t"]
        assert facts["num_events"] == len(t)
        assert (facts["t_start"], facts["t_end"]) == (int(t[0]), int(t[-1]) + 1)
        duration = (int(t[-1]) + 1 - int(t[0])) / 1e6
        assert facts["duration_s"] == pytest.approx(duration)
        assert facts["mean_event_rate_hz"] == pytest.approx(len(t) / duration)
    else:
        assert facts["num_events"] == 111_954


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_info_text(name, capsys):
    assert main(["info", str(real_file(name))]) == 0
    out = capsys.readouterr().out
    fmt, width, height = EXPECTED[name]
    assert f"format      {fmt}\n" in out
    if width is None:
        assert "unknown (not in the file; pass --width/--height; events span 54x61 px)" in out
    else:
        assert f"sensor      {width}x{height}" in out
    assert "frames      no" in out and "labels      no" in out


def test_info_size_override_and_errors(tmp_path, capsys):
    assert main(["info", str(real_file("ncars_obj_004397_td.dat")), "--json", "--width", "120",
                 "--height", "100"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["width"], facts["height"], facts["size_source"]) == (120, 100, "override")
    assert main(["info", str(tmp_path / "missing.raw")]) == 2
    err = capsys.readouterr().err
    assert "missing.raw: no such file or directory" in err and "Traceback" not in err
    (tmp_path / "junk.raw").write_bytes(b"% evt 3.0\n% end\n" + np.uint16(0x9000).tobytes())
    assert main(["info", str(tmp_path / "junk.raw")]) == 2
    assert "unknown evt3 word type 0x9" in capsys.readouterr().err


def test_info_on_a_model_checkpoint_describes_it(tmp_path, capsys):
    """`flexdet info model.pt` said "npz lacks array(s) ['t', 'x', 'y', 'p']": it describes the model (kind, size
    preset, inputs, classes, the input it expects), and a file that is no flexdet checkpoint is one clear line."""
    import torch

    from flexdet.data.geometry import Geometry
    from flexdet.data.input_spec import InputSpec
    from flexdet.models import build_model
    from flexdet.models.checkpoint import save_model

    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=True).eval()
    spec = InputSpec(Geometry(320, 240, scale=2), bins=model.config.bins, window_us=25_000)
    folder = tmp_path / "export"
    folder.mkdir()
    checkpoint = save_model(folder / "model.pt", model, spec, ["pedestrian", "car"])
    for path in (checkpoint, folder):  # the file, or the folder holding it
        assert main(["info", str(path), "--json"]) == 0
        facts = json.loads(capsys.readouterr().out)
        assert (facts["kind"], facts["model"], facts["inputs"], facts["classes"]) == \
               ("flexdet model", "nano", "fusion", ["pedestrian", "car"])
        assert facts["path"] == str(checkpoint)
        assert facts["parameters"] == sum(p.numel() for p in model.parameters())
        spec_facts = facts["input"]
        assert (spec_facts["width"], spec_facts["height"], spec_facts["scale"], spec_facts["bins"],
                spec_facts["window_us"]) == (160, 120, 2, 10, 25_000)
    assert main(["info", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "kind        flexdet model\n" in out and "classes     pedestrian, car\n" in out
    assert "input       160x120 (sensor 320x240 / 2), stacked_histogram of 10 bins over 25 ms windows" in out
    assert "nano, events + RGB frames" in out and "npz" not in out
    foreign = tmp_path / "published.ckpt"  # a checkpoint of another tool: no flexdet format tag
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    for path in (foreign, text):
        assert main(["info", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and "npz" not in err[0] and f"flexdet convert {path}" in err[0]
