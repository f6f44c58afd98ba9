"""Tests of the flexdet network: shapes, state, gradients, over-fitting, spectral equivalence, presets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flexdet.config import save_yaml
from flexdet.errors import CheckpointError, ConfigError
from flexdet.models import ModelConfig, build_model
from flexdet.models.assigner import simota_assign
from flexdet.models.postprocess import postprocess
from flexdet.models.spectral import AdaptiveFrequencyFilter, dft_bases, irfft2_matmul, rfft2_matmul


def _events(batch: int, height: int, width: int, seed: int = 0, channels: int = 20) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (batch, channels, height, width), generator=gen).float()


def _frames(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _expected_anchors(height: int, width: int) -> int:
    hp, wp = math.ceil(height / 32) * 32, math.ceil(width / 32) * 32
    return sum((hp // s) * (wp // s) for s in (8, 16, 32))


@pytest.fixture(scope="module")
def event_model():
    torch.manual_seed(0)
    return build_model("nano", num_classes=3, use_frames=False).eval()


@pytest.fixture(scope="module")
def fused_model():
    torch.manual_seed(0)
    return build_model("nano", num_classes=2, use_frames=True).eval()


@pytest.mark.parametrize("size", [(240, 304), (215, 320), (64, 96), (33, 70)])
@pytest.mark.parametrize("use_frames", [False, True])
def test_shapes_and_boxes_stay_in_the_input(size, use_frames, event_model, fused_model):
    model = fused_model if use_frames else event_model
    height, width = size
    events = _events(2, height, width)
    frames = _frames(2, height, width) if use_frames else None
    with torch.no_grad():
        raw, *state = model.forward_raw(events, frames, *model.init_state(2, height, width))
        detections, eager_state = model(events, frames)
    assert len(eager_state) == len(state)
    num_classes = model.config.num_classes
    assert raw.shape == (2, _expected_anchors(height, width), 5 + num_classes)
    assert len(state) == len(model.state_names())
    hp, wp = math.ceil(height / 32) * 32, math.ceil(width / 32) * 32
    for i, (stride, width_c) in enumerate(zip((4, 8, 16, 32), model.config.widths)):
        assert state[2 * i].shape == (2, width_c, hp // stride, wp // stride)
    x0, y0 = raw[..., 0] - raw[..., 2] / 2, raw[..., 1] - raw[..., 3] / 2
    x1, y1 = raw[..., 0] + raw[..., 2] / 2, raw[..., 1] + raw[..., 3] / 2
    tol = 1e-3
    assert x0.min() >= -tol and y0.min() >= -tol and x1.max() <= width + tol and y1.max() <= height + tol
    assert raw[..., 4:].min() >= 0 and raw[..., 4:].max() <= 1
    # anchors whose centre lies in the bottom/right padding can never fire
    offset = 0
    for stride in (8, 16, 32):
        rows, cols = hp // stride, wp // stride
        ys, xs = np.divmod(np.arange(rows * cols), cols)
        in_pad = ((xs + 0.5) * stride >= width) | ((ys + 0.5) * stride >= height)
        assert torch.all(raw[:, offset:offset + rows * cols][:, torch.from_numpy(in_pad), 4] == 0)
        offset += rows * cols
    assert len(detections) == 2
    for det in detections:
        assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64
        assert det["boxes"].shape[1] == 4 and det["scores"].shape == det["labels"].shape


def test_state_changes_output_and_reset_restores_it(event_model):
    first, second = _events(1, 64, 96, seed=1), _events(1, 64, 96, seed=2)
    with torch.no_grad():
        fresh = event_model.forward_raw(second, None)[0]
        state = event_model.forward_raw(first, None)[1:]
        carried = event_model.forward_raw(second, None, *state)[0]
        reset = event_model.forward_raw(second, None, *event_model.init_state(1, 64, 96))[0]
    assert (carried - fresh).abs().max() > 1e-3
    torch.testing.assert_close(reset, fresh, rtol=0, atol=0)


def test_eager_forward_equals_raw_plus_postprocess(event_model):
    events = _events(1, 64, 96, seed=3)
    with torch.no_grad():
        raw = event_model.forward_raw(events, None)[0]
        detections, _ = event_model(events)
    expected = event_model.postprocess(raw)
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(detections[0][key], expected[0][key])


def test_frames_none_reuses_the_cached_frame_features(fused_model):
    events, frames = _events(1, 64, 96, seed=4), _frames(1, 64, 96, seed=5)
    with torch.no_grad():
        _, state = fused_model(events, frames)
        lstm = fused_model.num_lstm_states
        with_frame = fused_model.forward_raw(events, frames, *state)[0]
        cached = fused_model.forward_raw(events, None, *state)[0]
        zero_cache = fused_model.forward_raw(events, None, *state[:lstm], *[torch.zeros_like(s) for s in state[lstm:]])[0]
        encoded = fused_model.encode_frames(frames)
    torch.testing.assert_close(cached, with_frame, rtol=0, atol=1e-6)
    assert (zero_cache - with_frame).abs().max() > 1e-4
    for a, b in zip(encoded, state[lstm:]):
        torch.testing.assert_close(a, b)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=True, dual_windows=True).train()
    steps, batch, height, width = 2, 2, 64, 96
    events = torch.stack([_events(batch, height, width, seed=t) for t in range(steps)])
    sub = torch.stack([_events(batch, height, width, seed=10 + t) for t in range(steps)])
    frames = torch.stack([_frames(batch, height, width, seed=t) for t in range(steps)])
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0], [50.0, 20.0, 90.0, 60.0]]),
                "labels": torch.tensor([0, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses, state = model.compute_losses(events, frames, [None, targets], events_sub_seq=sub)
    assert {"total", "iou", "obj", "cls", "balance"} <= set(losses)
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad
    assert all(not s.requires_grad for s in state) and len(state) == len(model.state_names())


def test_fuser_starts_events_first_and_scales_its_gate_input():
    """The gate starts at softmax([0, event_bias]) whatever the input; its logits see the pooled features
    scaled by 1 / sqrt(2 * dim), so an Adam step of size lr on every weight moves them by ~lr * sqrt(2 * dim)."""
    from flexdet.models.fusion import FlexFuser

    torch.manual_seed(0)
    fuser = FlexFuser(8, 16, noise=False, event_bias=2.0).train()
    rgb, ev = torch.randn(3, 8, 4, 4), torch.randn(3, 16, 4, 4)
    fused, weights = fuser(rgb, ev)
    assert torch.allclose(weights[:, 1], torch.full((3,), 1 / (1 + math.exp(-2.0))))
    assert torch.allclose(fused, weights[:, 0, None, None, None] * fuser.project(rgb) + weights[:, 1, None, None, None] * ev)
    with torch.no_grad():
        fuser.gate.weight[1].fill_(0.5)  # only the event logit reads the input
    pooled = torch.cat([fuser.project(rgb), ev], dim=1).mean(dim=(2, 3))
    event_logit = 2.0 + pooled.sum(1) * 0.5 / math.sqrt(32)
    expected = torch.stack([torch.zeros_like(event_logit), event_logit], dim=1).softmax(1)
    assert torch.allclose(fuser(rgb, ev)[1], expected, atol=1e-6)
    assert build_model("nano", num_classes=2).fusers["1"].gate.bias.tolist() == [0.0, 2.0]  # the default


def test_loss_weights_and_background_weight():
    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=False).train()
    events = _events(1, 64, 96)[None]
    boxes, labels = torch.tensor([[10.0, 10.0, 40.0, 40.0]]), torch.tensor([1])
    torch.manual_seed(1)
    plain, _ = model.compute_losses(events, None, [[{"boxes": boxes, "labels": labels}]])
    torch.manual_seed(1)
    muted, _ = model.compute_losses(events, None, [[{"boxes": boxes, "labels": labels, "weights": torch.zeros(1),
                                                     "bg_weight": 0.0}]])
    assert plain["iou"] > 0 and plain["cls"] > 0 and plain["obj"] > 0
    assert muted["iou"] == 0 and muted["cls"] == 0 and muted["obj"] == 0


def _rectangle_sample(box: tuple[int, int, int, int], label: int, height: int, width: int):
    hist = torch.zeros(20, height, width)
    x0, y0, x1, y1 = box
    hist[label * 10:(label + 1) * 10, y0:y1, x0:x1] = 2.0
    return hist, {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([label])}


@pytest.mark.slow
def test_overfits_two_synthetic_samples():
    torch.manual_seed(0)
    height, width = 64, 96
    a, target_a = _rectangle_sample((10, 8, 40, 40), 0, height, width)
    b, target_b = _rectangle_sample((50, 20, 90, 60), 1, height, width)
    events = torch.stack([a, b])[None]
    model = build_model("nano", num_classes=2, use_frames=False).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(250):
        losses, _ = model.compute_losses(events, None, [[target_a, target_b]])
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append(losses["total"].item())
        if np.mean(history[-5:]) < history[0] / 10 and len(history) >= 5:
            break
    assert np.mean(history[-5:]) < history[0] / 10, f"loss {history[0]:.3f} -> {np.mean(history[-5:]):.3f}"


@pytest.mark.parametrize("size", [(8, 10), (7, 9), (16, 20), (2, 3)])
def test_matmul_dft_matches_numpy_fft(size):
    height, width = size
    x = np.random.default_rng(0).standard_normal((2, 3, height, width))
    bases = {k: v.double() for k, v in dft_bases(height, width).items()}
    re, im = rfft2_matmul(torch.from_numpy(x), bases)
    reference = np.fft.rfft2(x, norm="ortho")
    np.testing.assert_allclose(re.numpy(), reference.real, atol=1e-6)
    np.testing.assert_allclose(im.numpy(), reference.imag, atol=1e-6)
    back = irfft2_matmul(torch.from_numpy(reference.real), torch.from_numpy(reference.imag), bases)
    np.testing.assert_allclose(back.numpy(), x, atol=1e-6)


@pytest.mark.parametrize("size", [(8, 10), (7, 9), (16, 20)])
def test_spectral_filter_implementations_agree(size):
    torch.manual_seed(0)
    filt = AdaptiveFrequencyFilter(16, groups=4)
    x = torch.randn(2, 16, *size, requires_grad=True)
    outputs, grads = [], []
    for impl in ("fft", "matmul"):
        filt.impl = impl
        out = filt(x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        outputs.append(out.detach())
        grads.append([x.grad.clone()] + [p.grad.clone() for p in filt.parameters()])
        x.grad = None
        filt.zero_grad()
    assert (outputs[0] - x.detach()).abs().max() > 1e-3  # the filter does something
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-5)
    for g_fft, g_matmul in zip(*grads):
        torch.testing.assert_close(g_matmul, g_fft, rtol=1e-4, atol=1e-5)


def test_switching_spectral_impl_keeps_weights_and_outputs():
    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=False).eval()
    events = _events(1, 96, 128, seed=7)
    with torch.no_grad():
        reference = model.forward_raw(events, None)
        model.set_spectral_impl("matmul")
        switched = model.forward_raw(events, None)
    assert model.config.spectral_impl == "matmul"
    for a, b in zip(switched, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    rebuilt = build_model("nano", num_classes=2, use_frames=False, spectral_impl="matmul").eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.forward_raw(events, None)[0], switched[0])


def test_postprocess_scores_and_class_aware_nms():
    # two heavily overlapping boxes of class 0, one overlapping box of class 1, one below threshold
    raw = torch.tensor([[[50.0, 50.0, 20.0, 20.0, 0.9, 0.8, 0.1],
                         [51.0, 50.0, 20.0, 20.0, 0.9, 0.7, 0.1],
                         [50.0, 51.0, 20.0, 20.0, 0.5, 0.1, 0.9],
                         [10.0, 10.0, 5.0, 5.0, 0.1, 0.05, 0.05]]])
    (det,) = postprocess(raw, conf_thresh=0.01, nms_thresh=0.45)
    order = torch.argsort(det["scores"], descending=True)
    torch.testing.assert_close(det["scores"][order], torch.tensor([0.72, 0.45]))
    torch.testing.assert_close(det["labels"][order], torch.tensor([0, 1]))
    torch.testing.assert_close(det["boxes"][order][0], torch.tensor([40.0, 40.0, 60.0, 60.0]))


def test_simota_picks_the_anchor_under_the_box():
    # 4x4 grid of stride-8 anchors; one 16x16 box covering the anchors centred at (12,12),(20,12),(12,20),(20,20)
    ys, xs = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    centers = (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * 8
    strides = torch.full((16,), 8.0)
    gt = torch.tensor([[8.0, 8.0, 24.0, 24.0]])
    pred = torch.cat([centers - 8, centers + 8], dim=1)  # every anchor predicts a 16x16 box around itself
    cls_logits = torch.full((16, 2), -4.0)
    cls_logits[:, 1] = 4.0
    result = simota_assign(pred, cls_logits, torch.zeros(16), centers, strides, gt, torch.tensor([1]),
                           center_radius=0.6)
    chosen = set(result.fg_mask.nonzero()[:, 0].tolist())
    inside = {5, 6, 9, 10}  # anchors (1,1),(2,1),(1,2),(2,2) in row-major order
    assert chosen and chosen <= inside
    assert torch.all(result.matched_gt == 0)
    expected_iou = 144.0 / (256 + 256 - 144)  # each candidate box is offset by 4 px in x and y
    torch.testing.assert_close(result.matched_iou, torch.full((len(chosen),), expected_iou))


def test_presets_parameter_budgets_and_yaml_roundtrip(tmp_path):
    nano = build_model("nano", num_classes=2, use_frames=False)
    assert sum(p.numel() for p in nano.parameters()) <= 2_000_000
    tiny = build_model("tiny", num_classes=2, use_frames=False)
    assert 3.5e6 < sum(p.numel() for p in tiny.parameters()) < 5.5e6
    assert nano.frame_backbone is None and not nano.fusers
    path = tmp_path / "custom.yaml"
    save_yaml(nano.config, path)
    again = build_model(str(path), num_classes=2, use_frames=False)
    assert again.config == nano.config
    assert [k for k in again.state_dict()] == [k for k in nano.state_dict()]


def test_bad_configuration_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown model preset"):
        build_model("huge", num_classes=2)
    with pytest.raises(ConfigError, match="widths"):
        build_model("nano", num_classes=2, widths=[16, 32])
    with pytest.raises(ConfigError, match="spectral_impl"):
        build_model("nano", num_classes=2, spectral_impl="cufft")
    with pytest.raises(ConfigError, match="stride 4"):
        build_model("nano", num_classes=2, fuse_stages=[True, True, True, True])
    with pytest.raises(ConfigError, match="unknown model option"):
        build_model("nano", num_classes=2, width=3)
    model = build_model("nano", num_classes=2, use_frames=False)
    with pytest.raises(ConfigError, match=r"\(B, 20, H, W\)"):
        model(torch.zeros(1, 10, 64, 64))
    assert isinstance(model.config, ModelConfig)


def test_frame_weights_load_from_a_local_file_only(tmp_path):
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    model = build_model("nano", num_classes=2, frame_weights=str(path))
    torch.testing.assert_close(model.frame_backbone.body.conv1.weight, resnet.conv1.weight)
    with pytest.raises(CheckpointError, match="not found"):
        build_model("nano", num_classes=2, frame_weights=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        build_model("nano", num_classes=2, frame_weights=str(tmp_path / "junk.pth"))
