"""RVT checkpoint conversion against RVT's own outputs (../shared/data/peers/rvt, made by RVT's code)."""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from flexdet.convert.rvt import convert_rvt, input_spec
from flexdet.data.events import EVENT_DTYPE
from flexdet.data.representations.histogram import stacked_histogram
from flexdet.data.representations.rvt_histogram import rvt_stacked_histogram
from flexdet.errors import CheckpointError
from flexdet.models.postprocess import postprocess
from flexdet.models.safe_unpickle import load_foreign_checkpoint

PEER = Path("../shared/data/peers/rvt")
CKPT, IO = PEER / "rvt_random.ckpt", PEER / "rvt_random_io.npz"
VARIANTS_SCRIPT = Path(__file__).parent / "fixtures" / "rvt_variants" / "make_rvt_variants_fixture.py"
FEATURES = ["backbone_stage1", "backbone_stage2", "backbone_stage3", "backbone_stage4",
            "fpn_stride8", "fpn_stride16", "fpn_stride32"]
REL = 1e-5  # max |flexdet - RVT| / max |RVT| per array; RVT's own 1- vs 2-thread runs differ by up to 8e-5 px
# These weights agree to 1e-7; 1e-6 still tells BatchNorm eps 1e-3 from 1e-5 apart (6e-6 on the boxes).
VARIANT_REL = 1e-6
ORT_REL = 1e-4  # onnxruntime's kernels against torch's, state fed back over the 4 steps (as test_models_onnx)


def _need_fixture() -> None:
    if not CKPT.is_file() or not IO.is_file():
        pytest.skip("RVT peer fixture is not available (../shared/data/peers/rvt next to the checkout)")


@pytest.fixture(scope="module")
def rvt():
    _need_fixture()
    torch.set_num_threads(1)
    return convert_rvt(CKPT), dict(np.load(IO))


def _stream(model, io):
    """Features, FPN maps and decoded head output of every fixture step, state carried from step to step."""
    outputs, state = [], None
    with torch.no_grad():
        for hist in io["hist"]:
            x = torch.from_numpy(hist).float()[None]
            if state is None:
                state = model.init_state(1, *x.shape[-2:])
            hp, wp = model.padded_size(*x.shape[-2:])
            padded = torch.nn.functional.pad(x, (0, wp - x.shape[-1], 0, hp - x.shape[-2]))
            features, _ = model.event_backbone(padded, list(state))
            fpn = model.neck(features[1:])
            raw, *state = model.forward_raw(x, None, *state)
            outputs.append({**dict(zip(FEATURES, [*features, *fpn])), "head_decoded": raw})
    return outputs


def _rel(got: torch.Tensor, want: np.ndarray) -> float:
    return float(np.abs(got.numpy() - want).max() / np.abs(want).max())


def test_detects_rvt_t_gen1_and_what_its_inputs_are(rvt):
    converted, io = rvt
    assert (converted.source, converted.dataset) == (str(io["model"]), str(io["dataset"])) == ("RVT-T", "gen1")
    assert converted.class_names == ["car", "pedestrian"]
    assert tuple(converted.input["padded_hw"]) == tuple(io["padded_hw"])
    assert tuple(converted.input["input_hw"]) == tuple(io["input_hw"])
    assert converted.input["time_norm"] == "events" and converted.input["end_inclusive"]
    assert converted.postprocess["conf_thresh"] == pytest.approx(float(io["conf_default"]))
    assert converted.postprocess["eval_conf_thresh"] == pytest.approx(float(io["conf_eval"]))
    assert converted.postprocess["nms_thresh"] == pytest.approx(float(io["nms_threshold"]))
    assert not converted.model.training
    assert sum(p.numel() for p in converted.model.parameters()) == 4_405_141 - 4 * sum([32, 64, 128, 256])


def test_every_stage_fpn_level_and_head_output_match_rvt(rvt):
    converted, io = rvt
    for step, outputs in enumerate(_stream(converted.model, io)):
        for name, got in outputs.items():
            assert _rel(got[0], io[name][step]) < REL, (name, step, _rel(got[0], io[name][step]))


def _rvt_rows(dets: dict) -> np.ndarray:
    return torch.cat([dets["boxes"], dets["objectness"][:, None], dets["scores"][:, None],
                      dets["labels"][:, None].float()], dim=1).numpy()


@pytest.mark.parametrize("name", ["dets_c0p001", "dets_c0p1"])
def test_final_detections_match_rvt_as_sets(rvt, name):
    converted, io = rvt
    conf = float(io["conf_eval"] if name == "dets_c0p001" else io["conf_default"])
    steps = _stream(converted.model, io)
    for step, outputs in enumerate(steps):
        want = io[name][io[f"{name}_step"] == step]
        got = _rvt_rows(postprocess(outputs["head_decoded"], conf, float(io["nms_threshold"]), 0, "rvt")[0])
        assert len(got) == len(want), (step, len(got), len(want))
        iou = box_iou(torch.from_numpy(want[:, :4]), torch.from_numpy(got[:, :4]))
        iou[torch.from_numpy(want[:, 6])[:, None] != torch.from_numpy(got[:, 6])[None]] = -1
        match = iou.argmax(dim=1).numpy()
        assert len(set(match.tolist())) == len(want)
        matched = got[match]
        np.testing.assert_array_equal(matched[:, 6], want[:, 6])
        np.testing.assert_allclose(matched[:, :4], want[:, :4], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(matched[:, 4:6], want[:, 4:6], rtol=0, atol=2e-5)
        # RVT's own postprocess on its own head output: flexdet's "rvt" rule gives its rows bit for bit
        exact = postprocess(torch.from_numpy(io["head_decoded"][step])[None], conf, float(io["nms_threshold"]), 0,
                            "rvt")[0]
        np.testing.assert_array_equal(_rvt_rows(exact), want)


def test_histograms_from_the_events_equal_rvt_bit_for_bit(rvt):
    _, io = rvt
    events = {"t": io["ev_t"], "x": io["ev_x"], "y": io["ev_y"], "p": io["ev_p"]}
    for step, end in enumerate(io["window_end_us"]):
        hist = rvt_stacked_histogram(events, 240, 304, int(end), window_us=50_000, bins=10, clip=10)
        assert hist.dtype == np.uint8
        np.testing.assert_array_equal(hist, io["hist"][step])


def test_the_converted_models_input_specification_builds_rvts_histograms(rvt):
    converted, io = rvt
    events = np.zeros(len(io["ev_t"]), EVENT_DTYPE)
    for name in "txyp":
        events[name] = io[f"ev_{name}"]
    spec = input_spec(converted)
    assert spec.size == (304, 240)
    np.testing.assert_array_equal(spec.model_inputs(events, io["window_start_us"], io["window_end_us"]), io["hist"])


def test_rvt_histogram_follows_rvt_float32_bins_wrap_and_nearest_downsampling():
    # Below 2^24 us both agree; past it float32 rounds the span: event 1_677_728 of a 16_777_281 us span is in
    # bin 0 exactly but in bin 1 by RVT's float32 floor((t - t0) / (t1 - t0) * bins).
    span, edge = 16_777_281, 1_677_728
    torch_bin = int(torch.floor((torch.tensor([edge]) - 0) / span * 10).item())  # torch's float32 arithmetic
    t = np.array([0, edge, span], np.int64)
    events = {"t": t, "x": np.array([0, 1, 2], np.uint16), "y": np.zeros(3, np.uint16), "p": np.ones(3, np.uint8)}
    hist = rvt_stacked_histogram(events, 2, 4, t_end=span, window_us=span, bins=10, clip=10)
    assert hist[10 + torch_bin, 0, 1] == 1 and torch_bin != (edge * 10) // span
    assert hist[10, 0, 0] == 1 and hist[19, 0, 2] == 1  # both window ends inclusive
    # 260 events on one pixel: RVT's uint8 counts wrap to 4 before the clip; flexdet's own saturate at 10
    many = {"t": np.zeros(260, np.int64), "x": np.ones(260, np.uint16), "y": np.ones(260, np.uint16),
            "p": np.zeros(260, np.uint8)}
    assert rvt_stacked_histogram(many, 4, 4, t_end=0)[0, 1, 1] == 4
    assert stacked_histogram(many, 4, 4, bins=10, clip=10)[0, 1, 1] == 10
    # 1 Mpx models: nearest-exact halving keeps odd rows and columns of the full-resolution histogram
    odd = {"t": np.array([0, 1], np.int64), "x": np.array([1, 2], np.uint16), "y": np.array([3, 2], np.uint16),
           "p": np.zeros(2, np.uint8)}
    half = rvt_stacked_histogram(odd, 4, 4, t_end=1, downscale=2)
    assert half.shape == (20, 2, 2) and half.sum() == 1 and half[0, 1, 0] == 1


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    payload = _RunsCode()
    payload.marker = marker
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"mdl.backbone.x": torch.zeros(2)}, "hyper_parameters": payload}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load.*(posix|os)\.system"):
        load_foreign_checkpoint(path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        convert_rvt(path)
    assert not marker.exists()


def test_records_of_unknown_classes_stay_inert_and_tensors_load(tmp_path):
    path = tmp_path / "plain.ckpt"
    weights = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(), "b": torch.tensor([1, 2], dtype=torch.int64)}
    torch.save({"state_dict": weights, "epoch": 3}, path)
    loaded = load_foreign_checkpoint(path)
    assert loaded["epoch"] == 3
    for key, value in weights.items():
        assert torch.equal(loaded["state_dict"][key], value) and loaded["state_dict"][key].dtype == value.dtype
    (tmp_path / "not_zip.ckpt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match="not a torch zip checkpoint"):
        load_foreign_checkpoint(tmp_path / "not_zip.ckpt")
    assert zipfile.is_zipfile(path)


def test_converted_model_exports_to_onnx_and_onnxruntime_matches_torch(rvt, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from flexdet.export.metadata import DeployMetadata
    from flexdet.export.onnx_export import export_onnx, state_input

    converted, io = rvt
    model = converted.model
    height, width = (int(v) for v in io["input_hw"])
    metadata = DeployMetadata(input=input_spec(converted), classes=converted.class_names, use_frames=False)
    paths = export_onnx(model, metadata, tmp_path / "rvt.onnx")
    session = ort.InferenceSession(str(paths["model"]), providers=["CPUExecutionProvider"])
    names = model.state_names()
    state = model.init_state(1, height, width)
    ort_state = [s.numpy() for s in state]
    for hist in io["hist"]:
        x = torch.from_numpy(hist).float()[None]
        with torch.no_grad():
            raw, *state = model.forward_raw(x, None, *state)
        outputs = session.run(None, {"events": x.numpy(), **{state_input(n): v for n, v in zip(names, ort_state)}})
        assert _rel(torch.from_numpy(outputs[0]), raw.numpy()) < ORT_REL
        ort_state = outputs[1:]


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_rvt_variants_fixture", VARIANTS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, source, dataset", [("s_gen4", "RVT-S", "gen4"), ("b_gen1", "RVT-B", "gen1")])
def test_rvt_s_gen4_and_rvt_b_gen1_match_rvt_without_a_stored_config(tmp_path, name, source, dataset):
    """RVT-S (head dim 24, Gen4: 3 classes, windows of 1/64 of the input) and RVT-B (two bottlenecks per CSP
    block), detected from the weights alone, as a released checkpoint without hyper-parameters would be."""
    torch.set_num_threads(1)
    fixture = _fixture_module()
    io = np.load(VARIANTS_SCRIPT.with_name("rvt_variants.npz"))
    *_, hw, seed = fixture.VARIANTS[name]
    shapes = [tuple(int(v) for v in s.split(",") if v) for s in io[f"{name}_shapes"]]
    weights = fixture.generated_weights(list(io[f"{name}_keys"]), shapes, seed)
    path = tmp_path / f"{name}.ckpt"
    torch.save({"epoch": 0, "state_dict": {f"mdl.{k}": v for k, v in weights.items()}}, path)
    converted = convert_rvt(path)
    assert (converted.source, converted.dataset) == (source, dataset)
    if dataset == "gen4":
        assert converted.input["downscale"] == 2 and tuple(converted.input["padded_hw"]) == (384, 640)
        assert converted.class_names == ["pedestrian", "two-wheeler", "car"]
    model, state = converted.model, None
    with torch.no_grad():
        for step, x in enumerate(fixture.inputs(seed, hw)):
            features, _ = model.event_backbone(x, list(state or model.init_state(1, *hw)))
            raw, *state = model.forward_raw(x, None, *(state or ()))
            assert _rel(features[3][0], io[f"{name}_backbone_stage4"][step]) < REL
            want = io[f"{name}_head_decoded"][step]
            assert _rel(raw[0, :, :4], want[:, :4]) < VARIANT_REL
            np.testing.assert_allclose(raw[0, :, 4:].numpy(), want[:, 4:], rtol=0, atol=VARIANT_REL)


def test_flexdet_convert_writes_a_model_that_loads_and_gives_rvts_head_output(rvt, tmp_path, capsys):
    from flexdet.cli import main
    from flexdet.models.checkpoint import load_model

    _, io = rvt
    out = tmp_path / "rvt_t"
    assert main(["convert", str(CKPT), "--out", str(out)]) == 0
    assert "RVT-T (gen1" in capsys.readouterr().out
    loaded = load_model(out)
    assert loaded.classes == ["car", "pedestrian"] and loaded.spec.time_norm == "events"
    assert loaded.model.config.postprocess_rule == "rvt" and not loaded.model.config.clip_to_input
    with torch.no_grad():
        raw, *_ = loaded.model.forward_raw(torch.from_numpy(io["hist"][0]).float()[None], None)
    assert _rel(raw[0], io["head_decoded"][0]) < REL


def test_a_converted_model_runs_in_the_headless_demo_on_a_real_1280x720_recording(rvt, tmp_path, capsys):
    """The converted Gen1 RVT-T (304x240 sensor) on a Gen4 camera recording (45 ms): letterboxed onto its sensor, boxes
    back in camera pixels, a video and a detections log written."""
    import json

    from flexdet.cli import main

    recording = CKPT.parents[2] / "real" / "evt3_gen41_1280x720_pedestrians.raw"
    if not recording.is_file():
        pytest.skip("real recording not available")
    assert main(["convert", str(CKPT), "--out", str(tmp_path / "rvt_t")]) == 0
    assert main(["demo", "--source", str(recording), "--model", str(tmp_path / "rvt_t"), "--backend", "torch",
                 "--rate", "100", "--speed", "0", "--headless", "--out",
                 str(tmp_path / "demo.mp4"), "--log", str(tmp_path / "demo.jsonl"), "--score-thresh", "0"]) == 0
    assert "fitted to the model's 304x240 sensor" in capsys.readouterr().out
    lines = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and (tmp_path / "demo.mp4").stat().st_size > 0  # 45 ms of events at 100 Hz
