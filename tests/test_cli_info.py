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
