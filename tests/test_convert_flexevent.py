"""FlexEvent checkpoint conversion against FlexEvent's own outputs (tests/fixtures/flexevent, made by the official
code: DylanOrange/flexevent 11471d3 + detectron2 02b5c4e on CPU; the script that made it is beside it)."""

from __future__ import annotations

import contextlib
import importlib.util
import io as text_io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from flexdet.cli import main
from flexdet.errors import CheckpointError
from flexdet.models.checkpoint import load_model

FIXTURE = Path(__file__).parent / "fixtures" / "flexevent"
SEQUENCE = Path(__file__).parent / "fixtures" / "flexevent_pipeline" / "dsec" / "train" / "synth_000"
SCRIPT, IO = FIXTURE / "make_flexevent_fixture.py", FIXTURE / "flexevent_2class_io.npz"
IO_8CLASS = FIXTURE / "flexevent_8class_io.npz"  # the 7-output model on IO's inputs: head, gates, detections
STEPS = 3
REL = 1e-4  # max |flexdet - FlexEvent| / max |FlexEvent| per array (float32 kernels of two code paths)
BOX_PX, SCORE_ABS = 1e-2, 1e-4  # the bar for detections
ORT_REL = 1e-4


def _script():
    spec = importlib.util.spec_from_file_location("make_flexevent_fixture", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _release(io: dict, path: Path) -> Path:
    """The fixture's weights in FlexEvent's released layout (a flat {"mdl." key: float32 tensor} .pth)."""
    keys = [str(k) for k in io["keys"]]
    shapes = [tuple(int(n) for n in s.split(",")) if s else () for s in io["shapes"]]
    dists = [(str(kind), *params) for kind, params in zip(io["dist_kind"], io["dist_params"])]
    weights = _script().generated_weights(keys, shapes, dists, _script().SEED)
    sums = [float(np.abs(weights[k].astype(np.float64)).sum()) for k in keys]
    np.testing.assert_allclose(sums, io["weight_sums"], rtol=1e-6)  # the weights the official code ran
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, path)
    return path


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The 2-class fixture's released-layout file and the official outputs."""
    torch.set_num_threads(1)
    io = dict(np.load(IO))
    return _release(io, tmp_path_factory.mktemp("flexevent") / "flexevent_2class.pth"), io


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory):
    """`flexdet convert` on the file, its printout, and the model loaded back with the public `load_model`."""
    out, printed = tmp_path_factory.mktemp("flexevent_out") / "model", text_io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["convert", str(released[0]), "--out", str(out)]) == 0
    return load_model(out), printed.getvalue(), out


def _tensors(io, step):
    """FlexEvent's own step inputs as the documented forward takes them: x, x_b float counts (B, 20, 215, 320),
    the frame RGB in [0, 1] (the fixture stores the BGR uint8 image FlexEvent's data pipeline makes)."""
    x = torch.from_numpy(io[f"x_t{step}"]).float()
    x_b = torch.from_numpy(io[f"x_b_t{step}"]).float()
    frame = torch.from_numpy(np.ascontiguousarray(io[f"image_bgr_t{step}"][:, ::-1])).float() / 255
    return x, x_b, frame


def _stream(model, io):
    """Every step's neck input (the averaged fused stages 2-4), neck output, gates per fuser and view, raw head
    output; and the last state. State carried from step to step, zeros at step 0."""
    captured, hooks = {}, []
    hooks.append(model.neck.register_forward_pre_hook(lambda m, a: captured.__setitem__("fused", list(a[0]))))
    hooks.append(model.neck.register_forward_hook(lambda m, a, out: captured.__setitem__("fpn", list(out))))
    for name, fuser in model.fusers.items():
        hooks.append(fuser.register_forward_hook(
            lambda m, a, out, name=name: captured.setdefault(f"gates{name}", []).append(out[1])))
    steps, state = [], None
    with torch.no_grad():
        for step in range(STEPS):
            captured.clear()
            x, x_b, frame = _tensors(io, step)
            if state is None:
                state = model.init_state(x.shape[0], *x.shape[-2:])
            raw, *state = model.forward_raw(torch.cat([x, x_b], 1), frame, *state)
            steps.append({**captured, "raw": raw})
    for hook in hooks:
        hook.remove()
    return steps, state


def _rel(got: torch.Tensor, want: np.ndarray) -> float:
    return float(np.abs(got.numpy() - want).max() / np.abs(want).max())


def test_convert_recognises_flexevent_and_records_its_pipeline(converted, released):
    loaded, printed, _ = converted
    meta = json.loads(str(released[1]["meta_json"]))
    config, spec = loaded.model.config, loaded.spec
    assert loaded.classes == meta["class_names"] == ["car", "pedestrian"]
    assert config.preset == "flexevent-b-dsec-2class" and config.widths == [64, 128, 256, 512]
    assert config.dual_windows and config.frame_backbone == "resnet50" and config.frame_norm == "frozen"
    assert spec.size == (320, 215) and loaded.model.padded_size(215, 320) == tuple(meta["in_res_hw"])
    assert (spec.sub_window, spec.sub_window_ratio, spec.sub_window_seed) == (
        "hashed", meta["high_window_ratio"], meta["high_window_seed"])
    assert (spec.time_norm, spec.end_inclusive, spec.geometry.frame_resize) == ("events", False, "cubic")
    assert config.conf_thresh == meta["postprocess"]["config_confidence_threshold"]
    assert config.nms_thresh == meta["postprocess"]["nms_threshold"]
    assert "FlexEvent (2class)" in printed and "hashed sub-window" in printed


def test_fused_stages_gates_fpn_and_head_match_flexevent(converted, released):
    io = released[1]
    model = converted[0].model
    steps, state = _stream(model, io)
    kept = json.loads(str(io["meta_json"]))["kept_feature_steps"]
    for step, out in enumerate(steps):
        assert _rel(out["raw"], io[f"head_decoded_t{step}"]) < REL, step
        for stage in (2, 3, 4):  # FlexEvent's stage outputs = (fused view a + fused view b) / 2
            gates_a, gates_b = out[f"gates{stage - 1}"]
            assert _rel(gates_a, io[f"stage{stage}_gates_a_t{step}"]) < REL
            assert _rel(gates_b, io[f"stage{stage}_gates_b_t{step}"]) < REL
            if step in kept:
                assert _rel(out["fused"][stage - 2], io[f"stage{stage}_fused_t{step}"]) < REL
        if step in kept:
            for level in range(3):
                assert _rel(out["fpn"][level], io[f"rvt_fpn{level}_t{step}"]) < REL
    names = model.state_names()
    for view, prefix in (("a", ""), ("b", "sub_")):  # both streams' LSTM states after the last step
        for part in ("h", "c"):
            got = state[names.index(f"{prefix}lstm_{part}3")]
            assert _rel(got, io[f"final_state_{view}_s4_{part}"]) < REL


@pytest.mark.parametrize("threshold, tag", [(0.1, "conf0p1"), (0.001, "conf0p001")])
def test_detections_match_flexevent_as_sets(converted, released, threshold, tag):
    """Same counts and labels per image, boxes within 1e-2 px, scores within 1e-4 (matched by IoU)."""
    _assert_detections(converted[0].model, released[1], threshold, tag)


def test_the_8class_model_converts_and_matches_flexevent(released, tmp_path):
    """FlexEvent's 8-class mode (7 outputs: DSEC's train class has no boxes) on the 2-class fixture's inputs."""
    io8 = dict(np.load(IO_8CLASS))
    assert str(io8["inputs_sha256"]) == str(released[1]["inputs_sha256"])
    io = {**released[1], **io8}
    assert main(["convert", str(_release(io8, tmp_path / "flexevent_8class.pth")), "--out", str(tmp_path / "m")]) == 0
    loaded = load_model(tmp_path / "m")
    assert loaded.classes == json.loads(str(io8["meta_json"]))["class_names"]
    assert loaded.model.config.preset == "flexevent-b-dsec-8class" and len(loaded.classes) == 7
    steps, _ = _stream(loaded.model, io)
    for step, out in enumerate(steps):
        assert _rel(out["raw"], io[f"head_decoded_t{step}"]) < REL, step
        assert _rel(out["gates3"][0], io[f"stage4_gates_a_t{step}"]) < REL
    for threshold, tag in ((0.1, "conf0p1"), (0.001, "conf0p001")):
        _assert_detections(loaded.model, io, threshold, tag, steps)


def _assert_detections(model, io, threshold: float, tag: str, steps=None) -> None:
    steps = _stream(model, io)[0] if steps is None else steps
    total = 0
    for step, out in enumerate(steps):
        rows, counts = io[f"det_{tag}_t{step}"], io[f"det_{tag}_counts_t{step}"]
        ours = model.postprocess(out["raw"], conf_thresh=threshold)
        for image, (want, got) in enumerate(zip(np.split(rows, np.cumsum(counts)[:-1]), ours)):
            assert len(got["boxes"]) == len(want), (step, image)
            total += len(want)
            if not len(want):
                continue
            match = box_iou(got["boxes"], torch.from_numpy(want[:, :4])).argmax(1).numpy()
            assert sorted(match.tolist()) == list(range(len(want)))
            assert np.abs(got["boxes"].numpy() - want[match, :4]).max() < BOX_PX
            assert np.abs(got["scores"].numpy() - want[match, 5]).max() < SCORE_ABS  # RVT's reported score
            assert np.array_equal(got["labels"].numpy(), want[match, 6].astype(np.int64))
    assert total > 0, tag


def test_onnx_export_carries_both_streams_and_onnxruntime_matches(converted, released, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from flexdet.export.metadata import DeployMetadata
    from flexdet.export.onnx_export import export_onnx, state_input

    io = released[1]
    loaded = converted[0]
    model = loaded.model
    metadata = DeployMetadata(input=loaded.spec, classes=loaded.classes, use_frames=True)
    paths = export_onnx(model, metadata, tmp_path / "flexevent.onnx", dynamic_batch=True)
    step_graph = ort.InferenceSession(str(paths["model"]), providers=["CPUExecutionProvider"])
    encoder = ort.InferenceSession(str(paths["frame_encoder"]), providers=["CPUExecutionProvider"])
    names = model.state_names()
    lstm = names[:model.num_lstm_states]
    assert sum(n.startswith("sub_lstm_") for n in lstm) == sum(n.startswith("lstm_") for n in lstm) == 8
    steps, _ = _stream(model, io)
    state = [s.numpy() for s in model.init_state(2, 215, 320)][:model.num_lstm_states]
    inputs = {i.name for i in step_graph.get_inputs()}
    for step, want in enumerate(steps):
        x, x_b, frame = _tensors(io, step)
        frame_maps = encoder.run(None, {"frames": frame.numpy()})
        feed = {"events": torch.cat([x, x_b], 1).numpy(), **{state_input(n): v for n, v in zip(lstm, state)},
                **{state_input(n): v for n, v in zip(names[model.num_lstm_states:], frame_maps)}}
        outputs = step_graph.run(None, {k: v for k, v in feed.items() if k in inputs})
        assert _rel(torch.from_numpy(outputs[0]), want["raw"].numpy()) < ORT_REL, step
        assert _rel(torch.from_numpy(outputs[0]), io[f"head_decoded_t{step}"]) < ORT_REL, step
        state = outputs[1:1 + model.num_lstm_states]


def test_a_flexevent_file_missing_its_frame_branch_or_with_extra_tensors_is_refused(released, tmp_path):
    from flexdet.convert.flexevent import convert_flexevent

    state = torch.load(released[0], weights_only=True)
    torch.save({k: v for k, v in state.items() if ".bottom_up.res4.5." not in k}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="ResNet-50"):
        convert_flexevent(tmp_path / "broken.pth")
    torch.save({**state, "mdl.rvt_block.2.extra.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="cannot place"):
        convert_flexevent(tmp_path / "extra.pth")
    assert main(["convert", str(tmp_path / "broken.pth"), "--out", str(tmp_path / "out")]) == 2


def test_the_live_stream_halves_events_as_the_dataset_file_and_gives_the_same_detections(converted, tmp_path):
    """A DSEC-layout sequence with frames streamed through the runtime (full-resolution events, halved by the
    stepper's own integrate-and-fire) gives the raw outputs of the dataset path (flexdet's events_2x.h5, the
    file FlexEvent's pipeline reads), window for window."""
    import shutil

    from flexdet.data.readers import open_recording
    from flexdet.datasets.sequences import open_dataset
    from flexdet.export.runtime.loader import load_runtime

    root = tmp_path / "dsec"
    shutil.copytree(SEQUENCE.parents[1], root, ignore=shutil.ignore_patterns("events_2x.h5"))
    loaded, _, model_dir = converted
    spec = loaded.spec
    dataset = open_dataset(root, "train")
    sequence = dataset.sequences[0]
    ends = sequence.frame_times[1:]
    inputs = sequence.model_inputs(spec, ends - spec.window_us, ends)
    frames = [sequence.frame(spec.frame_index(sequence.frame_times, int(t - spec.window_us), int(t)), spec) for t in ends]
    dataset.close()
    runtime = load_runtime(model_dir, backend="torch")
    runtime.reset(sequence="synth_000")
    with open_recording(root / "train" / "synth_000") as recording:
        images = dict(recording.frames())
        for k, t_end in enumerate(ends):
            t_start = int(t_end - spec.window_us)
            live = runtime.step(recording.read(t_start, int(t_end)), t_end=int(t_end), frame=images[t_start])
            with torch.no_grad():
                if k == 0:
                    state = loaded.model.init_state(1, 215, 320)
                frame = torch.from_numpy(frames[k]).permute(2, 0, 1)[None].float() / 255
                raw, *state = loaded.model.forward_raw(torch.from_numpy(inputs[k:k + 1]).float(), frame, *state)
            assert float(np.abs(live["raw"] - raw[0].numpy()).max()) < 1e-4 * float(np.abs(raw.numpy()).max()), k


def test_a_converted_flexevent_model_runs_the_headless_demo_on_a_dsec_sequence_with_frames(converted, tmp_path):
    model_dir = converted[2]
    assert main(["demo", "--source", str(SEQUENCE), "--model", str(model_dir), "--backend", "torch", "--rate", "20",
                 "--speed", "0", "--headless", "--out", str(tmp_path / "demo.mp4"), "--log",
                 str(tmp_path / "demo.jsonl"), "--score-thresh", "0.1"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and (tmp_path / "demo.mp4").stat().st_size > 0  # 150 ms at 20 Hz
    boxes = np.concatenate([np.asarray(line["boxes"], np.float32).reshape(-1, 4) for line in lines])
    assert len(boxes) and boxes[:, 2].max() <= 640 and boxes[:, 3].max() <= 480  # sensor pixels, 640x480
