"""SSM S5-ViT checkpoint conversion with `flexdet convert`, against the official code's own outputs
(tests/fixtures/ssm/make_s5_vit_fixture.py ran ssms_event_cameras' YoloXDetector; its seeded weights are written
here as a released-form checkpoint)."""

from __future__ import annotations

import contextlib
import importlib.util
import io as text_io
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from flexdet.cli import main
from flexdet.convert.rvt import convert_rvt
from flexdet.errors import CheckpointError
from flexdet.models.checkpoint import load_model
from flexdet.models.postprocess import postprocess

FIXTURE = Path(__file__).parent / "fixtures" / "ssm"
SCRIPT, IO = FIXTURE / "make_s5_vit_fixture.py", FIXTURE / "s5vit_random_io.npz"
STAGES = [f"backbone_stage{i}" for i in range(1, 5)]
FPN = ["fpn_stride8", "fpn_stride16", "fpn_stride32"]
REL = 1e-5  # max |flexdet - official| / max |official| per array (as the RVT conversion test)


def _script():
    spec = importlib.util.spec_from_file_location("make_s5_vit_fixture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The fixture's weights as SSM releases them ({"state_dict": {"mdl." + key: tensor}}), and the outputs."""
    torch.set_num_threads(1)
    script, io = _script(), dict(np.load(IO))
    keys = [str(k) for k in io["keys"]]
    shapes = [tuple(int(n) for n in s.split(",")) if s else () for s in io["shapes"]]
    weights = script.generated_weights(keys, shapes, script.SEED)
    sums = [float(weights[k].double().abs().sum()) for k in keys]
    # the weights the official code ran; libm's exp differs in the last bits between CPUs (running variances)
    np.testing.assert_allclose(sums, io["weight_sums"], rtol=1e-6)
    path = tmp_path_factory.mktemp("ssm") / "s5vit_random.ckpt"
    torch.save({"state_dict": {f"mdl.{k}": v for k, v in weights.items()}}, path)
    return path, weights, io


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory):
    """`flexdet convert` on the checkpoint, its printout and the model it wrote, loaded back."""
    out, printed = tmp_path_factory.mktemp("ssm_out") / "s5vit", text_io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["convert", str(released[0]), "--out", str(out)]) == 0
    return load_model(out), printed.getvalue()


def _rel(got: torch.Tensor, want: np.ndarray) -> float:
    return float(np.abs(got.numpy() - want).max() / np.abs(want).max())


def _stream(model, clip: np.ndarray):
    """Per step, state carried: the four stage maps, three FPN maps and the decoded head output; last state."""
    outputs, state = [], model.init_state(1, *clip.shape[-2:])
    with torch.no_grad():
        for frame in torch.from_numpy(clip):
            features, _ = model.event_backbone(frame, list(state))
            raw, *state = model.forward_raw(frame, None, *state)
            outputs.append({**dict(zip(STAGES + FPN, [*features, *model.neck(features[1:])])), "head_decoded": raw})
    return outputs, state


def test_flexdet_convert_detects_an_s5_vit_and_records_rvts_input_and_postprocessing(converted):
    loaded, printed = converted
    assert "S5-ViT-T (gen1, classes car, pedestrian)" in printed
    config = loaded.model.config
    assert (config.recurrence, config.s5_discretization, config.preset) == ("s5", "bilinear", "s5vit-t-gen1")
    assert config.postprocess_rule == "rvt" and not config.clip_to_input and config.partition_split == 1
    assert loaded.classes == ["car", "pedestrian"]
    assert (loaded.spec.bins, loaded.spec.window_us, loaded.spec.time_norm) == (10, 50_000, "events")
    assert not any("lstm" in name for name in loaded.model.state_dict())


def test_every_stage_fpn_level_head_output_and_state_match_the_official_code(converted, released):
    model, io = converted[0].model, released[2]
    outputs, state = _stream(model, io["clip"])
    for step, step_outputs in enumerate(outputs):
        for name, got in step_outputs.items():
            assert _rel(got[0], io[name][step]) < REL, (name, step, _rel(got[0], io[name][step]))
    for i in range(4):  # the official scan's last state (re, im) per stage
        assert _rel(state[2 * i][0], io[f"state_re_{i}"]) < REL
        assert _rel(state[2 * i + 1][0], io[f"state_im_{i}"]) < REL
    with torch.no_grad():  # a whole clip at once (training's parallel scan) gives the same stage maps
        clip = torch.from_numpy(io["clip"])
        features, _ = model.event_backbone.forward_sequence(clip, list(model.init_state(1, *clip.shape[-2:])))
    for name, got in zip(STAGES, features):
        assert _rel(got[:, 0], io[name]) < REL, name


def test_the_comparison_tells_zoh_from_bilinear_discretisation(converted, released):
    """Run with S5's other discretisation, the same weights no longer give the official stage maps."""
    model, io = converted[0].model, released[2]
    try:
        for stage in model.event_backbone.stages:
            stage.s5.ssm.discretization = "zoh"
        outputs, _ = _stream(model, io["clip"][:2])
    finally:
        for stage in model.event_backbone.stages:
            stage.s5.ssm.discretization = "bilinear"
    assert _rel(outputs[1]["backbone_stage1"][0], io["backbone_stage1"][1]) > 100 * REL


@pytest.mark.parametrize("name, conf", [("dets_c0p001", 0.001), ("dets_c0p1", 0.1)])
def test_final_detections_match_the_official_postprocess(converted, released, name, conf):
    model, io = converted[0].model, released[2]
    outputs, _ = _stream(model, io["clip"])
    assert len(io[name]) > 0
    for step, step_outputs in enumerate(outputs):
        want = io[name][io[f"{name}_step"] == step]
        dets = postprocess(step_outputs["head_decoded"], conf, 0.45, 0, "rvt")[0]
        got = torch.cat([dets["boxes"], dets["objectness"][:, None], dets["scores"][:, None],
                         dets["labels"][:, None].float()], dim=1).numpy()
        assert len(got) == len(want), (step, len(got), len(want))
        iou = box_iou(torch.from_numpy(want[:, :4]), torch.from_numpy(got[:, :4]))
        iou[torch.from_numpy(want[:, 6])[:, None] != torch.from_numpy(got[:, 6])[None]] = -1
        matched = got[iou.argmax(dim=1).numpy()]
        assert len({tuple(row) for row in matched}) == len(want)
        np.testing.assert_array_equal(matched[:, 6], want[:, 6])
        np.testing.assert_allclose(matched[:, :4], want[:, :4], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(matched[:, 4:6], want[:, 4:6], rtol=0, atol=1e-5)


def _save(path: Path, weights: dict[str, torch.Tensor]) -> Path:
    torch.save({"state_dict": {f"mdl.{k}": v for k, v in weights.items()}}, path)
    return path


def test_s5_variants_flexdet_cannot_run_are_refused_naming_the_file(released, tmp_path):
    weights = released[1]
    low_rank = dict(weights, **{"backbone.stages.2.s5_block.s5.seq.BP": torch.zeros(128, 8, 2)})
    with pytest.raises(CheckpointError, match=r"low_rank\.ckpt: S5 block tensors flexdet cannot place.*seq\.BP"):
        convert_rvt(_save(tmp_path / "low_rank.ckpt", low_rank))
    with_lstm = dict(weights, **{"backbone.stages.0.lstm.conv1x1.weight": torch.zeros(128, 64, 1, 1)})
    with pytest.raises(CheckpointError, match=r"with_lstm\.ckpt: RVT tensors flexdet cannot place.*lstm"):
        convert_rvt(_save(tmp_path / "with_lstm.ckpt", with_lstm))
    three_stages = {k: v for k, v in weights.items() if not k.startswith("backbone.stages.3.s5_block.")}
    with pytest.raises(CheckpointError, match=r"three_stages\.ckpt: expected S5 blocks in backbone stages 0-3"):
        convert_rvt(_save(tmp_path / "three_stages.ckpt", three_stages))


def test_converted_s5_vit_exports_to_onnx_and_onnxruntime_streams_like_torch(converted, released, tmp_path):
    """The converted S5-ViT exported at the fixture's input size and streamed by onnxruntime, S5 states fed back,
    equals torch's stream over the fixture's clip (outputs and last state)."""
    import dataclasses

    ort = pytest.importorskip("onnxruntime")
    from flexdet.data.geometry import Geometry
    from flexdet.export.metadata import DeployMetadata
    from flexdet.export.onnx_export import export_onnx, state_input

    loaded, io = converted[0], released[2]
    model, (height, width) = loaded.model, io["clip"].shape[-2:]
    spec = dataclasses.replace(loaded.spec, geometry=Geometry(width, height))
    paths = export_onnx(model, DeployMetadata(input=spec, classes=loaded.classes, use_frames=False),
                        tmp_path / "s5vit.onnx")
    session = ort.InferenceSession(str(paths["model"]), providers=["CPUExecutionProvider"])
    names = model.state_names()
    state = model.init_state(1, height, width)
    ort_state = [s.numpy() for s in state]
    for frame in torch.from_numpy(io["clip"]):
        with torch.no_grad():
            raw, *state = model.forward_raw(frame, None, *state)
        outputs = session.run(None, {"events": frame.numpy(), **{state_input(n): v for n, v in zip(names, ort_state)}})
        assert _rel(torch.from_numpy(outputs[0]), raw.numpy()) < 1e-4
        ort_state = outputs[1:]
    for got, want in zip(ort_state, state):
        assert _rel(torch.from_numpy(got), want.numpy()) < 1e-4
