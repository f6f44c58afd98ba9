"""S5 recurrence (SSM): step == parallel scan, timestep rescaling, anti-aliasing, detector training and ONNX."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flexdet.config import save_yaml
from flexdet.convert.ssm import SSM_OPTIONS, map_s5_block, map_s5_stages
from flexdet.errors import CheckpointError, ConfigError
from flexdet.models import build_model
from flexdet.models.s5 import S5, S5Block, hippo_n, set_step_scale


def _reference_steps(layer: S5, u: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence in complex128 straight from the parameters (closed-form ZOH), independent of s5.py's
    real arithmetic: returns (outputs (T, N, H), last state (N, P))."""
    lam = torch.view_as_complex(layer.lambda_.detach().double().contiguous())
    b = torch.view_as_complex(layer.b.detach().double().contiguous())
    c = torch.view_as_complex(layer.c.detach().double().contiguous())
    step = layer.step_scale * layer.log_step.detach().double().exp()
    lam_bar = torch.exp(lam * step)
    b_bar = ((lam_bar - 1) / lam)[:, None] * b
    x, ys = x0, []
    for u_t in u.double():
        x = lam_bar * x + u_t.to(torch.complex128) @ b_bar.T
        ys.append((x @ c.T).real + layer.d.detach().double() * u_t)
    return torch.stack(ys), x


def _layer(dim: int = 32, **kwargs) -> S5:
    torch.manual_seed(0)
    return S5(dim, **kwargs)


def test_hippo_n_is_the_normal_part_of_legs():
    eigenvalues, vectors = hippo_n(16)
    assert torch.allclose(vectors.conj().T @ vectors, torch.eye(16, dtype=torch.complex128), atol=1e-12)
    assert torch.allclose(eigenvalues.real, torch.full((16,), -0.5, dtype=torch.float64))
    # V diag(λ) V^* rebuilds LegS + P P^T: lower triangle -sqrt((2n+1)(2k+1))/2, diagonal -1/2.
    rebuilt = (vectors * eigenvalues) @ vectors.conj().T
    assert rebuilt.imag.abs().max() < 1e-10
    assert math.isclose(rebuilt.real[3, 1].item(), -math.sqrt(7 * 3) / 2, rel_tol=1e-9)
    assert math.isclose(rebuilt.real[1, 3].item(), math.sqrt(7 * 3) / 2, rel_tol=1e-9)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_step_mode_equals_parallel_scan_over_100_steps(discretization):
    layer = _layer(discretization=discretization, bandlimit=0.5)
    generator = torch.Generator().manual_seed(1)
    u = torch.randn(100, 6, 32, generator=generator)
    x_re, x_im = torch.randn(6, 32, generator=generator), torch.randn(6, 32, generator=generator)
    with torch.no_grad():
        steps, s_re, s_im = [], x_re, x_im
        for u_t in u:
            y, s_re, s_im = layer(u_t, s_re, s_im)
            steps.append(y)
        scanned, last_re, last_im = layer.scan(u, x_re, x_im)
    steps = torch.stack(steps)
    assert steps.abs().max() > 1.0  # outputs of order one, so 1e-5 is a relative bound too
    np.testing.assert_allclose(scanned.numpy(), steps.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(last_re.numpy(), s_re.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(last_im.numpy(), s_im.numpy(), rtol=0, atol=1e-5)


def test_step_matches_complex_zoh_reference():
    layer = _layer()
    set_step_scale(layer, 0.3)
    generator = torch.Generator().manual_seed(2)
    u = torch.randn(40, 4, 32, generator=generator)
    x0 = torch.complex(torch.randn(4, 32, generator=generator), torch.randn(4, 32, generator=generator))
    want_y, want_x = _reference_steps(layer, u, x0.to(torch.complex128))
    with torch.no_grad():
        y, s_re, s_im = layer.scan(u, x0.real, x0.imag)
    np.testing.assert_allclose(y.numpy(), want_y.numpy(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(s_re.numpy(), want_x.real.numpy(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(s_im.numpy(), want_x.imag.numpy(), rtol=0, atol=2e-5)


def test_half_windows_with_ratio_one_half_equal_one_full_window():
    """ZOH is exact for an input held over the step: two half steps (scale 0.5) land where one full step does,
    and both equal exp(λΔ) x0 + (exp(λΔ) - 1) / λ B u computed in complex128."""
    layer = _layer()
    generator = torch.Generator().manual_seed(3)
    u = torch.randn(5, 32, generator=generator)
    x_re, x_im = torch.randn(5, 32, generator=generator), torch.randn(5, 32, generator=generator)
    with torch.no_grad():
        _, full_re, full_im = layer(u, x_re, x_im)
        set_step_scale(layer, 0.5)
        _, half_re, half_im = layer(u, x_re, x_im)
        _, half_re, half_im = layer(u, half_re, half_im)
        set_step_scale(layer, 1.0)
    _, want = _reference_steps(layer, u[None], torch.complex(x_re, x_im).to(torch.complex128))
    for re, im in ((full_re, full_im), (half_re, half_im)):
        np.testing.assert_allclose(re.numpy(), want.real.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(im.numpy(), want.imag.numpy(), rtol=0, atol=1e-5)
    # A single half step is not a full one: the scale really changes the dynamics.
    with torch.no_grad():
        set_step_scale(layer, 0.5)
        _, once_re, _ = layer(u, x_re, x_im)
    assert (once_re - full_re).abs().max() > 1e-2


def test_bandlimit_zeroes_aliasing_modes_at_init_and_dynamically():
    layer = _layer(64, dt_min=0.01, dt_max=0.1, bandlimit=0.5)
    frequencies = layer.log_step.detach().exp() * layer.lambda_.detach()[:, 1].abs() / (2 * math.pi)
    silent = layer.c.detach().abs().sum(dim=(0, 2)) == 0
    assert silent.any() and (~silent).any()
    assert torch.equal(silent, frequencies >= 0.25)
    dynamic = _layer(64, dt_min=0.01, dt_max=0.1, bandlimit=0.5, bandlimit_dynamic=True)
    with torch.no_grad():
        dynamic.c.normal_()  # trained weights: every mode has output weights again
        set_step_scale(dynamic, 4.0)  # steps 4x longer: more modes above the band are masked
        c_re = dynamic.discretize()[4]
    masked = c_re.abs().sum(dim=0) == 0
    assert torch.equal(masked, 4.0 * frequencies >= 0.25) and masked.sum() > silent.sum()


def _tiny_s5(**overrides):
    torch.manual_seed(0)
    return build_model("nano-s5", num_classes=2, use_frames=False, **overrides)


@pytest.mark.parametrize("recurrence", ["s5", "lstm"])
def test_backbone_clip_path_equals_stepping(recurrence):
    model = _tiny_s5(recurrence=recurrence).eval()
    clip = torch.randint(0, 5, (6, 2, 20, 64, 96), generator=torch.Generator().manual_seed(4)).float()
    state = list(model.init_state(2, 64, 96))
    with torch.no_grad():
        stepped, current = [], state
        for events in clip:
            features, current = model.event_backbone(events, current)
            stepped.append(features)
        features, last = model.event_backbone.forward_sequence(clip, state)
    for i in range(4):
        np.testing.assert_allclose(features[i].numpy(), torch.stack([f[i] for f in stepped]).numpy(),
                                   rtol=0, atol=1e-5)
    for got, want in zip(last, current):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dynamic", [False, True])
def test_per_column_step_scales_equal_separate_runs(dynamic):
    """Multi-rate batches: column b stepped and scanned with scale[b] equals that column alone at scale[b]."""
    layer = _layer(bandlimit=0.5, bandlimit_dynamic=dynamic)
    generator = torch.Generator().manual_seed(7)
    u = torch.randn(9, 3, 4, 5, 32, generator=generator)
    x_re, x_im = torch.randn(3, 4, 5, 32, generator=generator), torch.randn(3, 4, 5, 32, generator=generator)
    scales = torch.tensor([0.25, 1.0, 3.6])
    with torch.no_grad():
        set_step_scale(layer, scales)
        scanned, last_re, _ = layer.scan(u, x_re, x_im)
        stepped, s_re, s_im = [], x_re, x_im
        for u_t in u:
            y, s_re, s_im = layer(u_t, s_re, s_im)
            stepped.append(y)
        for b, scale in enumerate(scales.tolist()):
            set_step_scale(layer, scale)
            alone, alone_re, _ = layer.scan(u[:, b:b + 1], x_re[b:b + 1], x_im[b:b + 1])
            np.testing.assert_allclose(scanned[:, b].numpy(), alone[:, 0].numpy(), rtol=0, atol=1e-5)
            np.testing.assert_allclose(torch.stack(stepped)[:, b].numpy(), alone[:, 0].numpy(), rtol=0, atol=1e-5)
            np.testing.assert_allclose(last_re[b].numpy(), alone_re[0].numpy(), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="positive"):
        set_step_scale(layer, torch.tensor([1.0, 0.0]))


def test_training_losses_through_the_scan_equal_stepping():
    """compute_losses runs S5 stages over the clip with the scan; the losses and gradients equal a step-by-step
    BPTT of the same fused model (the ConvLSTM path is the reference loop)."""
    torch.manual_seed(3)
    model = build_model("nano-s5", num_classes=2, use_frames=True, in_channels=4).train()
    clip = torch.randint(0, 4, (4, 2, 4, 64, 96), generator=torch.Generator().manual_seed(5)).float()
    frames = torch.rand(4, 2, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    frames_seq = torch.stack([frames[0], frames[0], frames[2], frames[2]])
    target = [{"boxes": torch.tensor([[10.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([0])},
              {"boxes": torch.tensor([[50.0, 20.0, 90.0, 60.0]]), "labels": torch.tensor([1])}]
    targets = [None, target, None, target]
    set_step_scale(model, torch.tensor([0.5, 2.0]))
    torch.manual_seed(11)  # the fusers' noisy gates draw in the same order on both paths
    losses, state = model.compute_losses(clip, frames_seq, targets)
    losses["total"].backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.config.recurrence = "lstm-loop"  # any other value takes _clip's step-by-step branch
    try:
        torch.manual_seed(11)
        reference, reference_state = model.compute_losses(clip, frames_seq, targets)
    finally:
        model.config.recurrence = "s5"
    reference["total"].backward()
    assert math.isclose(losses["total"].item(), reference["total"].item(), rel_tol=1e-5)
    for got, want in zip(state, reference_state):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)
    for name, p in model.named_parameters():
        if p.grad is not None:
            scale = float(p.grad.abs().max()) + 1e-12
            np.testing.assert_allclose(grads[name].numpy(), p.grad.numpy(), rtol=0, atol=1e-3 * scale, err_msg=name)


def test_s5_presets_config_and_window_rescaling(tmp_path):
    nano = build_model("nano", num_classes=2, use_frames=False)
    assert nano.config.recurrence == "lstm" and nano.state_names()[:2] == ["lstm_h0", "lstm_c0"]
    model = _tiny_s5()
    assert model.state_names()[:2] == ["s5_re0", "s5_im0"]
    assert not any(".lstm." in k for k in model.state_dict()) and any(".s5.ssm." in k for k in model.state_dict())
    assert [tuple(s.shape) for s in model.init_state(1, 64, 96)] == [tuple(s.shape)
                                                                     for s in nano.init_state(1, 64, 96)]
    model.set_window_us(5_600)
    layers = [m for m in model.modules() if isinstance(m, S5)]
    assert len(layers) == 4 and all(math.isclose(m.step_scale, 5_600 / 50_000) for m in layers)
    save_yaml(model.config, tmp_path / "s5.yaml")
    assert build_model(str(tmp_path / "s5.yaml"), num_classes=2, use_frames=False).config == model.config
    for bad in ({"recurrence": "gru"}, {"s5_discretization": "euler"}, {"s5_dt_min": 0.2},
                {"s5_train_window_us": 0}, {"s5_bandlimit": -1.0}):
        with pytest.raises(ConfigError, match="recurrence|s5_"):
            build_model("nano-s5", num_classes=2, use_frames=False, **bad)
    with pytest.raises(ConfigError, match="step scale"):
        model.set_window_us(0)


def test_s5_detector_loss_goes_down_on_a_tiny_batch():
    model = _tiny_s5().train()
    height, width = 64, 96
    events = torch.zeros(2, 2, 20, height, width)
    events[:, 0, :10, 8:40, 10:40] = 2.0
    events[:, 1, 10:, 20:60, 50:90] = 2.0
    targets = [{"boxes": torch.tensor([[10.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([0])},
               {"boxes": torch.tensor([[50.0, 20.0, 90.0, 60.0]]), "labels": torch.tensor([1])}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(12):
        losses, _ = model.compute_losses(events, None, [None, targets])
        optimizer.zero_grad()
        losses["total"].backward()
        assert model.event_backbone.stages[3].s5.ssm.log_step.grad.abs().sum() > 0
        optimizer.step()
        history.append(losses["total"].item())
    assert np.mean(history[-3:]) < 0.7 * history[0], history


def test_s5_onnx_step_streams_like_torch_at_a_rescaled_window(tmp_path):
    pytest.importorskip("onnxruntime")
    from test_models_onnx import HEIGHT, WIDTH, _assert_stream_matches, _events, _export

    model = _tiny_s5(spectral_impl="matmul").eval()
    names = model.state_names()
    state = model.init_state(1, HEIGHT, WIDTH)
    model.set_window_us(5_600)  # baked into the graph: trained on 50 ms, streamed at 5.6 ms
    _, session = _export(model, (_events(0), *state), ["events", *[f"in_{n}" for n in names]],
                         ["raw", *[f"out_{n}" for n in names]], tmp_path / "s5.onnx", with_frames=False)
    _assert_stream_matches(model, session, names, state, compare_state=True, steps=5)
    model.set_window_us(50_000)  # the graph keeps 5.6 ms dynamics; torch at 50 ms must now disagree
    with pytest.raises(AssertionError):
        _assert_stream_matches(model, session, names, state, compare_state=True, steps=2)


SSM_FIXTURE = Path(__file__).parent / "fixtures" / "ssm" / "s5_block.npz"


def test_official_ssm_s5_block_converts_exactly():
    """tests/fixtures/ssm/make_s5_block_fixture.py ran the official S5Block (random weights) over a clip."""
    fixture = np.load(SSM_FIXTURE)
    weights = {key[len("weight/"):]: torch.from_numpy(fixture[key]) for key in fixture.files
               if key.startswith("weight/")}
    assert bool(fixture["prev_state_ignored"])  # why the clip starts from the zero state
    clip = torch.from_numpy(fixture["clip"])
    block = S5Block(clip.shape[2], discretization=SSM_OPTIONS["s5_discretization"], bandlimit=0.5).eval()
    block.load_state_dict(map_s5_block(str(SSM_FIXTURE), weights), strict=True)
    zero = torch.zeros(clip.shape[1:])
    with torch.no_grad():
        outputs, state_re, state_im = block.scan(clip, zero, zero)
        stepped, s_re, s_im = [], zero, zero
        for frame in clip:
            out, s_re, s_im = block(frame, s_re, s_im)
            stepped.append(out)
    want = fixture["outputs"]
    for got in (outputs, torch.stack(stepped)):
        assert np.abs(got.numpy() - want).max() <= 1e-5 * np.abs(want).max()
    for got, key in ((state_re, "state_re"), (state_im, "state_im"), (s_re, "state_re"), (s_im, "state_im")):
        assert np.abs(got.numpy() - fixture[key]).max() <= 1e-5 * np.abs(fixture[key]).max()
    stages = map_s5_stages("ckpt", {f"backbone.stages.{i}.s5_block.{k}": v for i in range(4)
                                    for k, v in weights.items()})
    assert len(stages) == 4 * len(weights) and "event_backbone.stages.3.s5.ssm.lambda_" in stages
    with pytest.raises(CheckpointError, match="lacks 'backbone.stages.0.s5_block.s5.seq.C'"):
        map_s5_block("ckpt", {f"backbone.stages.0.s5_block.{k}": v for k, v in weights.items() if k != "s5.seq.C"},
                     "backbone.stages.0.s5_block.")
    bidirectional = dict(weights, **{"s5.seq.C": torch.cat([weights["s5.seq.C"]] * 2, dim=1)})
    with pytest.raises(CheckpointError, match="unidirectional"):
        map_s5_block("ckpt", bidirectional)
