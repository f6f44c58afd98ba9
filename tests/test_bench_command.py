"""`flexdet bench` and `flexdet export` options: values refused before anything loads, what bench says about the
frame encoder, the stages both runtimes share, --fp16 on a CPU, and an --out that already holds an export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flexdet.cli import main as cli_main
from flexdet.data.events import make_events
from flexdet.data.representations import RepresentationConfig, build_windows
from flexdet.export import load_runtime

pytest.importorskip("onnxruntime")

HEIGHT, WIDTH = 48, 64


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback, no raw warning
    return err


@pytest.mark.parametrize("option, value, words", [
    ("--steps", "0", "--steps must be >= 1, got 0"),
    ("--steps", "-3", "--steps must be >= 1, got -3"),
    ("--warmup", "-1", "--warmup must be >= 0"),
    ("--step-us", "0", "--step-us must be >= 1"),
    ("--frame-every", "0", "--frame-every must be >= 1"),
    ("--threads", "-2", "--threads must be >= 1"),
    ("--events-per-step", "-5", "--events-per-step must be >= 0"),
    ("--event-rate=-1e6", None, "--event-rate must be a positive number"),
    ("--event-rate", "nan", "--event-rate must be a positive number"),
    ("--height", "0", "--height must be >= 1"),
])
def test_bench_option_values_are_refused_before_the_model_loads(option, value, words, tmp_path, capsys):
    # the model path does not exist: an error about the option, not about the path, proves the order
    status = cli_main(["bench", "--model", str(tmp_path / "missing"), option, *([value] if value else [])])
    err = _error(capsys)
    assert status == 2 and words in err and "missing" not in err


def test_bench_height_without_width_is_refused(tmp_path, capsys):
    assert cli_main(["bench", "--model", str(tmp_path / "missing"), "--height", "48"]) == 2
    assert "--height and --width together" in _error(capsys)


def test_bench_backend_help_states_the_default(capsys):
    with pytest.raises(SystemExit):
        cli_main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--backend" in text and "default: auto" in text and "else onnxruntime" in text


def _bench(capsys, *extra: str) -> tuple[dict, str]:
    argv = ["bench", "--model", "nano", "--backend", "onnxruntime", "--height", str(HEIGHT), "--width",
            str(WIDTH), "--events-per-step", "500", "--steps", "6", "--warmup", "1", *extra]
    assert cli_main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli_main(argv) == 0
    return report, capsys.readouterr().out


def test_bench_says_how_often_the_frame_encoder_ran(capsys):
    report, text = _bench(capsys, "--frames", "--frame-every", "2")
    # frames at steps 0, 2, 4, 6 of warmup 1 + 6 timed steps: 2, 4 and 6 are timed
    assert report["frame_encoder_runs"] == 3
    assert "frame encoder: ran 3 times in 6 timed steps (a new frame every 2 steps" in text
    report, text = _bench(capsys, "--no-frames")
    assert report["frame_encoder_runs"] == 0 and "frame encoder: none (event-only model)" in text


def test_shared_stages_match_between_backends_and_leave_torch_threads_alone():
    """The stages both runtimes share give the same detections; post-processing runs on one torch thread and
    gives the setting back (see streaming._one_torch_thread)."""
    rng = np.random.default_rng(4)
    n = 3000
    events = make_events(np.sort(rng.integers(0, 50_000, n)), rng.integers(0, WIDTH, n),
                         rng.integers(0, HEIGHT, n), rng.integers(0, 2, n))
    threads = torch.get_num_threads()
    outs = {}
    for backend in ("torch", "onnxruntime"):
        runtime = load_runtime("nano", backend=backend, device="cpu", height=HEIGHT, width=WIDTH, seed=2,
                               conf_thresh=0.0)
        try:
            outs[backend] = runtime.step(events, t_end=50_000)
        finally:
            runtime.close()
        assert torch.get_num_threads() == threads
    # random weights score many anchors nearly alike, so NMS may keep other boxes among ties: the raw head
    # output is what must agree, and both runtimes must have post-processed it into detections
    np.testing.assert_allclose(outs["torch"]["raw"], outs["onnxruntime"]["raw"], rtol=1e-3, atol=1e-4)
    assert len(outs["torch"]["boxes"]) > 0 and len(outs["onnxruntime"]["boxes"]) > 0


@pytest.mark.parametrize("kind", ["stacked_histogram", "event_frame", "voxel_grid", "time_surface"])
def test_one_window_path_equals_the_many_window_path(kind):
    """A single window (a live step) takes the serial kernel; it must equal the same window built among others."""
    rng = np.random.default_rng(5)
    n = 20_000
    events = make_events(np.sort(rng.integers(0, 90_000, n)), rng.integers(0, WIDTH, n),
                         rng.integers(0, HEIGHT, n), rng.integers(0, 2, n))
    config = RepresentationConfig(kind=kind, bins=5)
    ends = [50_000, 70_000, 90_000]
    many = build_windows(events, HEIGHT, WIDTH, ends, 50_000, config)
    for i, end in enumerate(ends):
        one = build_windows(events, HEIGHT, WIDTH, [end], 50_000, config)
        np.testing.assert_array_equal(one[0], many[i])


def test_export_fp16_on_a_cpu_is_one_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --fp16 is allowed")
    status = cli_main(["export", "--preset", "nano", "--fp16", "--height", "32", "--width", "32", "--out",
                       str(tmp_path / "half")])
    err = _error(capsys)
    assert status == 2 and "--fp16" in err and "CUDA" in err and "float32" in err
    assert not (tmp_path / "half").exists()


def test_export_refuses_an_out_that_holds_an_export_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "export"
    argv = ["export", "--preset", "nano", "--no-frames", "--height", "32", "--width", "32", "--out", str(out)]
    assert cli_main(argv) == 0
    capsys.readouterr()
    before = (out / "model.onnx").stat().st_mtime_ns
    assert cli_main([*argv, "--seed", "1"]) == 2
    err = _error(capsys)
    assert "already holds an export" in err and "--overwrite" in err
    assert (out / "model.onnx").stat().st_mtime_ns == before
    assert cli_main([*argv, "--seed", "1", "--overwrite"]) == 0
    assert (out / "model.onnx").stat().st_mtime_ns != before
    # an existing empty folder is fine, as for `flexdet train`
    (tmp_path / "empty").mkdir()
    assert cli_main([*argv[:-1], str(tmp_path / "empty")]) == 0
