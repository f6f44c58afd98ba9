"""One input specification: every path (training clips, evaluation, pseudo labels, the runtime on torch and
onnxruntime) builds the same input for the same window, and boxes come back in sensor pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flexdet.cli import main as cli_main
from flexdet.config import apply_overrides
from flexdet.data.input_spec import InputSpec, identity_spec
from flexdet.data.synthetic import generate_dataset, load_preset
from flexdet.datasets import open_dataset, stream_windows
from flexdet.evaluation.evaluate import evaluate
from flexdet.export.runtime import load_runtime
from flexdet.export.runtime.onnx_backend import OnnxRuntimeBackend
from flexdet.export.runtime.torch_backend import TorchBackend
from flexdet.fal.generate import teacher_predictions
from flexdet.models.checkpoint import load_model, save_model
from flexdet.training.config import load_train_config
from flexdet.training.trainer import Trainer, train

pytest.importorskip("onnxruntime")

TINY = ["data.batch_size=2", "data.clip_steps=2", "optim.steps=2", "optim.lr=0.001", "run.progress=false",
        "run.threads=1", "run.checkpoint_every=2"]


def synth(root: Path, width: int, height: int, duration_s: float = 0.35) -> Path:
    config = apply_overrides(load_preset("quickstart"), {
        "scene.width": width, "scene.height": height, "scene.duration_s": duration_s, "dataset.sequences": 1,
        "dataset.split": [1.0, 0.0, 0.0], "dataset.workers": 1, "dataset.layout": "dsec"})
    return generate_dataset(root, config)


class Recorder:
    """Records every input a backend's `run` / `encode_frame` receives (as the stepper hands it over)."""

    def __init__(self, monkeypatch, backend) -> None:
        self.inputs: list[np.ndarray] = []
        self.frames: list[np.ndarray] = []
        run, encode = backend.run, backend.encode_frame

        def recording_run(this, events):
            self.inputs.append(np.array(events))
            return run(this, events)

        def recording_encode(this, frame):
            self.frames.append(np.array(frame))
            return encode(this, frame)

        monkeypatch.setattr(backend, "run", recording_run)
        monkeypatch.setattr(backend, "encode_frame", recording_encode)


def keep_every_box(model) -> None:
    """Two training steps leave every score near 0.03 and NMS would pick among near-ties in any order: centre
    the scores at 0.25 (zero obj/cls bias), keep every anchor above 0.2, no NMS, no cap, so the box sets are
    fixed by the network's outputs alone."""
    with torch.no_grad():
        for conv in [*model.head.obj_preds, *model.head.cls_preds]:
            conv.bias.zero_()
    model.config.conf_thresh, model.config.nms_thresh, model.config.max_detections = 0.2, 1.0, 0


def sensor_images(sequence) -> list[np.ndarray]:
    files = sorted(sequence.frame_dir.glob("*.png"))
    return [cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in files]


def test_model_inputs_bin_windows_and_dual_half_windows():
    spec = identity_spec(4, 6, bins=2, dual_windows=True, window_us=1000)
    events = np.zeros(4, dtype=[("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    events["t"], events["x"], events["y"], events["p"] = [100, 600, 999, 1000], [1, 2, 3, 4], [0, 1, 2, 3], [1, 0, 1, 1]
    out = spec.model_inputs(events, [0], [1000])
    assert out.shape == (1, 8, 4, 6) and out.dtype == np.uint8
    full, half = out[0, :4], out[0, 4:]
    assert full[2, 0, 1] == 1 and full[1, 1, 2] == 1 and full[3, 2, 3] == 1 and full.sum() == 3  # t=1000 excluded
    assert half.sum() == 2 and half[0, 1, 2] == 1 and half[3, 2, 3] == 1  # [500, 1000): bins of 250 µs
    backwards = spec.model_inputs(events, [0], [1000], backwards=True)
    assert backwards[0, 4:].sum() == 1  # the first half [0, 500) nearest the instant when played backwards
    inclusive = spec.replace(end_inclusive=True, dual_windows=False).model_inputs(events, [0], [1000])
    assert inclusive.sum() == 4


def test_dsec_model_boxes_in_sensor_pixels_equal_evaluation_predictions(tmp_path, monkeypatch):
    """A DSEC two-class model (top 430 rows, half resolution) trained two steps, exported, run by the runtime on
    full 640x480 sensor events and frames: the same boxes, in sensor pixels, as evaluation's predictions files,
    on torch and on onnxruntime; and evaluation fed the stepper exactly the runtime's inputs."""
    root = synth(tmp_path / "dsec640", 640, 480)
    config = load_train_config(preset="quickstart", overrides=TINY + ["data.benchmark=dsec2", "data.downsample=1"])
    result = train(config, root, tmp_path / "run")
    loaded = load_model(result.checkpoint)
    assert (loaded.spec.geometry.crop_height, loaded.spec.geometry.scale, loaded.spec.size) == (430, 2, (320, 215))
    keep_every_box(loaded.model)
    save_model(tmp_path / "every_box.pt", loaded.model, loaded.spec, loaded.classes)
    assert cli_main(["export", str(tmp_path / "every_box.pt"), "--out", str(tmp_path / "export")]) == 0

    dataset = open_dataset(root, "train", benchmark="dsec2")
    sequence = dataset.sequences[0]
    evaluated = Recorder(monkeypatch, TorchBackend)
    evaluate(loaded.model, dataset, [20.0], "stream", tmp_path / "eval", "fusion", progress=False,
             spec=loaded.spec)
    evaluated_inputs, evaluated_frames = list(evaluated.inputs), list(evaluated.frames)
    predictions = np.load(next((tmp_path / "eval" / "predictions").rglob(f"{sequence.name}.npy")))
    starts, ends = stream_windows(sequence, 20)
    images = sensor_images(sequence)
    recording = sequence.recording()
    for backend in ("torch", "onnxruntime"):
        runtime = load_runtime(tmp_path / "export", backend=backend, device="cpu")
        assert runtime.sensor_size == (480, 640)
        streamed = Recorder(monkeypatch, TorchBackend if backend == "torch" else OnnxRuntimeBackend)
        shown, widest = None, 0.0
        for k, (t_start, t_end) in enumerate(zip(starts.tolist(), ends.tolist())):
            index = loaded.spec.frame_index(sequence.frame_times, t_start, t_end)
            frame = images[index] if index != shown else None
            shown = index
            out = runtime.step(recording.read(t_end - 60_000, t_end), t_end=t_end, frame=frame)
            rows = predictions[predictions["t"] == t_end]
            expected = np.stack([rows["x"], rows["y"], rows["x"] + rows["w"], rows["y"] + rows["h"]], 1)
            got = out["boxes"]
            assert len(got) == len(expected) > 100, f"{backend} step {k}"
            distance = np.abs(got[:, None, :] - expected[None, :, :]).max(-1)  # as sets: row order may differ
            assert distance.min(1).max() < 1e-3 and distance.min(0).max() < 1e-3, f"{backend} step {k}"
            widest = max(widest, float(got[:, 2].max()))
        assert widest > 330  # sensor pixels (the input is 320 wide)
        assert len(streamed.inputs) == len(evaluated_inputs) == len(ends)
        assert len(streamed.frames) == len(evaluated_frames) > 0
        for a, b in zip(evaluated_inputs, streamed.inputs):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(evaluated_frames, streamed.frames):
            np.testing.assert_array_equal(a, b)
        runtime.close()
    dataset.close()


def test_dual_window_model_builds_the_same_inputs_on_every_path(tmp_path, monkeypatch):
    """Dual windows train, evaluate, pseudo-label, export and stream; the input of every window is the same on
    each path (training clip, evaluation, the FAL teacher, the runtime on torch and onnxruntime)."""
    root = synth(tmp_path / "small", 96, 64, 0.5)
    overrides = TINY + ["model.inputs=events", "data.downsample=2", "model.options={dual_windows: true}"]
    config = load_train_config(preset="quickstart", overrides=overrides)
    trainer = Trainer(config, root, tmp_path / "run")
    spec = trainer.spec
    assert spec.dual_windows and spec.channels == 40
    sequence = trainer.dataset.sequences[0]
    starts, ends = trainer.cache.windows(sequence, 20.0)
    steps = len(ends)
    from flexdet.training.clips import Clip, ClipAugment

    clip = trainer.loader.load_clip(Clip(0, 0, 0, steps, ClipAugment(), True))[0]
    result = trainer.fit()
    trainer.close()
    assert cli_main(["export", str(result.checkpoint), "--out", str(tmp_path / "export")]) == 0
    loaded = load_model(result.checkpoint)
    assert loaded.spec == spec

    paths: dict[str, list[np.ndarray]] = {}
    dataset = open_dataset(root, "train", downsample=2)
    recorder = Recorder(monkeypatch, TorchBackend)
    evaluate(loaded.model, dataset, [20.0], "stream", None, "events", progress=False, spec=loaded.spec)
    paths["evaluation"] = list(recorder.inputs)
    recorder.inputs.clear()
    grid = np.concatenate([[starts[0]], ends])
    teacher_predictions(loaded.model, dataset.sequences[0], loaded.spec, grid, reverse=False)
    paths["pseudo-label"] = list(recorder.inputs)
    recording = dataset.sequences[0].recording()
    for backend in ("torch", "onnxruntime"):
        recorder = Recorder(monkeypatch, TorchBackend if backend == "torch" else OnnxRuntimeBackend)
        runtime = load_runtime(tmp_path / "export", backend=backend, device="cpu")
        for t_end in ends.tolist():
            runtime.step(recording.read(t_end - spec.window_us, t_end), t_end=t_end)
        paths[f"runtime {backend}"] = list(recorder.inputs)
        runtime.close()
    training = [clip[k][None].numpy().astype(np.uint8) for k in range(steps)]
    assert training[3].sum() > 0 and training[3][:, 20:].sum() > 0  # events in both views
    for name, inputs in paths.items():
        assert len(inputs) == steps, name
        for k in range(steps):
            np.testing.assert_array_equal(np.asarray(inputs[k], np.uint8), training[k], err_msg=f"{name} step {k}")
    dataset.close()


def test_an_export_carries_its_specification_and_old_checkpoints_still_load(tmp_path):
    from flexdet.data.geometry import Geometry
    from flexdet.export import export_bundle, metadata_for_model, read_onnx_metadata
    from flexdet.models import build_model

    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=False).eval()
    spec = InputSpec(Geometry(640, 480, 430, 2), window_us=25_000, time_norm="events", end_inclusive=True)
    export_bundle(model, metadata_for_model(model, spec, ["car", "pedestrian"]), tmp_path)
    assert read_onnx_metadata(tmp_path / "model.onnx").input == spec
    assert load_model(tmp_path).spec == spec and load_model(tmp_path / "model.onnx").classes == ["car", "pedestrian"]
    runtime = load_runtime(tmp_path, backend="onnxruntime")
    assert runtime.sensor_size == (480, 640) and runtime.input_size == (215, 320)
    runtime.close()
