"""`flexdet export --target cpu`: the CPU model and its session settings, picked by the onnxruntime runtime on a
CPU, giving the float32 model's outputs; on the converted RVT-T fixture its detections match RVT's own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from flexdet.cli import main as cli_main
from flexdet.errors import FlexdetError
from flexdet.export import load_runtime
from flexdet.models.postprocess import postprocess

pytest.importorskip("onnxruntime")

PEER = Path("../shared/data/peers/rvt")
CKPT, IO = PEER / "rvt_random.ckpt", PEER / "rvt_random_io.npz"


@pytest.fixture(scope="module")
def cpu_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cpu") / "export"
    assert cli_main(["export", "--preset", "nano", "--no-frames", "--height", "48", "--width", "64", "--out",
                     str(out), "--target", "cpu"]) == 0
    return out


def test_cpu_export_writes_the_model_and_the_settings_it_measured(cpu_export):
    choice = json.loads((cpu_export / "cpu.json").read_text())
    assert (cpu_export / choice["model"]).is_file() and choice["model"] == "model_cpu.onnx"
    assert choice["chosen"] in choice["inference_ms"] and set(choice["inference_ms"]) == {
        "threads=cores", "threads=1", "parallel", "spinning"}
    assert choice["max_relative_difference"] <= 1e-3


def test_onnxruntime_on_a_cpu_loads_the_cpu_model_and_gives_the_float_models_outputs(cpu_export):
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 11, (1, 20, 48, 64)).astype(np.uint8)
    cpu = load_runtime(cpu_export, backend="onnxruntime")
    plain = load_runtime(cpu_export / "model.onnx", backend="onnxruntime")
    eager = load_runtime(cpu_export, backend="torch", device="cpu")
    assert cpu.backend.path.name == "model_cpu.onnx" and plain.backend.path.name == "model.onnx"
    assert cpu.backend.session_options == json.loads((cpu_export / "cpu.json").read_text())["session"]
    # the caller's own settings win over the recorded ones
    assert load_runtime(cpu_export, backend="onnxruntime", intra_op_num_threads=2).backend.session_options[
        "intra_op_num_threads"] == 2
    for _ in range(3):  # state carried
        a, b, c = (rt.backend.run(inputs).numpy() for rt in (cpu, plain, eager))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-3)


def test_a_broken_cpu_choice_is_refused_naming_the_file(cpu_export, tmp_path):
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(cpu_export, copy)
    for text, words in (("{", "not a JSON file"), ('{"model": "../x.onnx", "session": {}}', "needs 'model'"),
                        ('{"model": "gone.onnx", "session": {}}', "gone.onnx"),
                        ('{"model": "model_cpu.onnx", "session": {"spin": 1}}', "unknown session settings")):
        (copy / "cpu.json").write_text(text)
        with pytest.raises(FlexdetError, match=words) as info:
            load_runtime(copy, backend="onnxruntime")
        assert "cpu.json" in str(info.value)


def test_target_cpu_refuses_gpu_artifacts(tmp_path, capsys):
    assert cli_main(["export", "--preset", "nano", "--target", "cpu", "--engine", "--out", str(tmp_path / "o")]) == 2
    assert "--target cpu" in capsys.readouterr().err


def test_rvt_t_fixture_on_the_cpu_model_matches_rvts_detections(tmp_path, capsys):
    """Issue #29: the CPU model's detections match RVT's at IoU >= 0.9 for at least 95 % of them (same class),
    state carried over the fixture's steps, at RVT's evaluation and default confidence thresholds."""
    if not CKPT.is_file() or not IO.is_file():
        pytest.skip("RVT peer fixture is not available (../shared/data/peers/rvt next to the checkout)")
    io = dict(np.load(IO))
    assert cli_main(["convert", str(CKPT), "--out", str(tmp_path / "rvt")]) == 0
    assert cli_main(["export", str(tmp_path / "rvt"), "--out", str(tmp_path / "export"), "--target", "cpu"]) == 0
    capsys.readouterr()
    runtime = load_runtime(tmp_path / "export", backend="onnxruntime")
    assert runtime.backend.path.name == "model_cpu.onnx"
    raws = [runtime.backend.run(np.ascontiguousarray(hist[None], np.uint8)) for hist in io["hist"]]
    matched = total = 0
    for name, conf in (("dets_c0p001", float(io["conf_eval"])), ("dets_c0p1", float(io["conf_default"]))):
        for step, raw in enumerate(raws):
            want = torch.from_numpy(io[name][io[f"{name}_step"] == step])
            got = postprocess(raw, conf, float(io["nms_threshold"]), 0, "rvt")[0]
            if len(want) == 0:
                continue
            iou = box_iou(want[:, :4], got["boxes"]) if len(got["boxes"]) else torch.zeros(len(want), 1)
            if len(got["boxes"]):
                iou[want[:, 6][:, None] != got["labels"][None].float()] = 0
            matched += int((iou.max(dim=1).values >= 0.9).sum())
            total += len(want)
    assert total > 0 and matched / total >= 0.95, (matched, total)
