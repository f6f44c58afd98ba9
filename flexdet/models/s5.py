"""S5 recurrence (Smith et al., ICLR 2023) as used per stage by SSM (Zubić et al., CVPR 2024): a diagonal
complex linear state space run independently at every pixel, whose timestep follows the step period.

Everything is written in real arithmetic (complex numbers as re/im pairs) so the streaming step exports to
ONNX with the state as two explicit tensors; `scan` runs a whole clip with a parallel (doubling) scan and
equals stepping. `step_scale` = inference window / training window rescales the learned timesteps; a
(B,) tensor gives every batch column its own window (multi-rate training batches mix rates).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flexdet.errors import ConfigError
from flexdet.models.config import S5_DISCRETIZATIONS

Discrete = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def hippo_n(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (size,) and unitary eigenvectors (size, size), complex128, of the normal part of
    HiPPO-LegS (HiPPO-N, S5's initialisation): every real part is -1/2."""
    k = torch.arange(size, dtype=torch.float64)
    root = torch.sqrt(2 * k + 1)
    legs = -(torch.tril(root[:, None] * root[None, :]) - torch.diag(k))
    normal = legs + 0.5 * root[:, None] * root[None, :]  # LegS + P P^T with P = sqrt(k + 1/2)
    skew = normal - torch.diag(torch.diagonal(normal))
    imag, vectors = torch.linalg.eigh(skew.to(torch.complex128) * -1j)
    return torch.complex(torch.diagonal(normal).mean().expand(size).clone(), imag), vectors


def _cmul(ar: torch.Tensor, ai: torch.Tensor, br: torch.Tensor, bi: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ar + i ai) * (br + i bi) as a re/im pair."""
    return ar * br - ai * bi, ar * bi + ai * br


def _apply(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """x (..., N) times matrix.T: matrix (M, N) shared, or (B, 1, 1, M, N) per batch column (x (.., B, Y, X, N))."""
    if matrix.dim() == 2:
        return x @ matrix.T
    return (x.unsqueeze(-2) @ matrix.transpose(-1, -2)).squeeze(-2)


class S5(nn.Module):
    """x_t = Λ̄ x_{t-1} + B̄ u_t, y_t = Re(C x_t) + D u_t over the last axis of u (features H, state P).

    Parameters keep the reference layout: `lambda_` (P, 2), `b` (P, H, 2) and `c` (H, P, 2) as re/im pairs,
    `d` (H,), `log_step` (P,). With `bandlimit`, modes whose frequency step·|Im λ|/2π is at or above
    bandlimit/2 start with zero output weights (SSM's anti-aliasing); `bandlimit_dynamic` also masks them at
    every discretisation with the rescaled step, so a model run on longer steps drops the modes that alias.
    """

    def __init__(self, dim: int, state_dim: int | None = None, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 discretization: str = "zoh", bandlimit: float | None = None, bandlimit_dynamic: bool = False
                 ) -> None:
        super().__init__()
        if discretization not in S5_DISCRETIZATIONS:
            raise ConfigError(f"S5 discretization: expected one of {S5_DISCRETIZATIONS}, "
                              f"got {discretization!r}")
        if not 0 < dt_min <= dt_max:
            raise ConfigError(f"S5 timestep range: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        state_dim = state_dim or dim
        eigenvalues, vectors = hippo_n(state_dim)
        # B = V^-1 B0 and C = C0 V with LeCun-normal B0 (P, H) and complex-normal C0 (H, P).
        b0 = torch.randn(state_dim, dim, dtype=torch.float64) / math.sqrt(dim)
        c0 = torch.randn(dim, state_dim, dtype=torch.complex128) / math.sqrt(state_dim)
        log_step = torch.empty(state_dim).uniform_(math.log(dt_min), math.log(dt_max))
        c = c0 @ vectors
        if bandlimit is not None:
            c = c * (self._frequencies(log_step.exp(), eigenvalues.imag.float()) < bandlimit / 2).to(c.dtype)
        self.lambda_ = nn.Parameter(torch.view_as_real(eigenvalues).float())
        self.b = nn.Parameter(torch.view_as_real(vectors.conj().T @ b0.to(torch.complex128)).float())
        self.c = nn.Parameter(torch.view_as_real(c).float())
        self.d = nn.Parameter(torch.rand(dim))
        self.log_step = nn.Parameter(log_step)
        self.discretization = discretization
        self.bandlimit = bandlimit
        self.bandlimit_dynamic = bandlimit_dynamic
        self.step_scale = 1.0

    @staticmethod
    def _frequencies(step: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        return step * imag.abs() / (2 * math.pi)

    def discretize(self) -> Discrete:
        """(Λ̄ re, Λ̄ im, B̄ re, B̄ im, C re, C im) for the current step = step_scale · exp(log_step); with a
        per-column scale (B,) the step-dependent parts gain leading dims (B, 1, 1) that broadcast over maps."""
        scale = self.step_scale
        if torch.is_tensor(scale):
            scale = scale.to(self.log_step).reshape(-1, 1, 1, 1)
        step = scale * self.log_step.exp()
        a, w = self.lambda_.unbind(-1)
        if self.discretization == "zoh":  # Λ̄ = exp(λΔ), B̄ = (Λ̄ - 1) / λ · B
            magnitude = torch.exp(a * step)
            lam_re, lam_im = magnitude * torch.cos(w * step), magnitude * torch.sin(w * step)
            norm = a * a + w * w
            k_re, k_im = ((lam_re - 1) * a + lam_im * w) / norm, (lam_im * a - (lam_re - 1) * w) / norm
        else:  # bilinear: Λ̄ = (1 - Δλ/2)^-1 (1 + Δλ/2), B̄ = (1 - Δλ/2)^-1 Δ B
            den_re, den_im = 1 - step * a / 2, -step * w / 2
            norm = den_re * den_re + den_im * den_im
            inv_re, inv_im = den_re / norm, -den_im / norm
            lam_re, lam_im = _cmul(inv_re, inv_im, 1 + step * a / 2, step * w / 2)
            k_re, k_im = inv_re * step, inv_im * step
        b_re, b_im = _cmul(k_re[..., None], k_im[..., None], self.b[..., 0], self.b[..., 1])
        c_re, c_im = self.c[..., 0], self.c[..., 1]
        if self.bandlimit is not None and self.bandlimit_dynamic:
            keep = (self._frequencies(step, w) < self.bandlimit / 2).to(c_re.dtype)
            c_re, c_im = c_re * keep[..., None, :], c_im * keep[..., None, :]
        return lam_re, lam_im, b_re, b_im, c_re, c_im

    def forward(self, u: torch.Tensor, x_re: torch.Tensor, x_im: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step: u (..., H), state (..., P) re/im -> (y (..., H), new state re, new state im)."""
        lam_re, lam_im, b_re, b_im, c_re, c_im = self.discretize()
        new_re, new_im = _cmul(lam_re, lam_im, x_re, x_im)
        new_re, new_im = new_re + _apply(u, b_re), new_im + _apply(u, b_im)
        return _apply(new_re, c_re) - _apply(new_im, c_im) + self.d * u, new_re, new_im

    def scan(self, u: torch.Tensor, x_re: torch.Tensor, x_im: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A clip: u (T, ..., H), state (..., P) -> (y (T, ..., H), last state re, im); equals T steps.

        Hillis-Steele doubling: after the round with offset d every x_t sums the 2d latest inputs, so
        ceil(log2 T) rounds of elementwise work replace T dependent steps."""
        lam_re, lam_im, b_re, b_im, c_re, c_im = self.discretize()
        s_re, s_im = _apply(u, b_re), _apply(u, b_im)
        first_re, first_im = _cmul(lam_re, lam_im, x_re, x_im)
        s_re = torch.cat([s_re[:1] + first_re, s_re[1:]])
        s_im = torch.cat([s_im[:1] + first_im, s_im[1:]])
        power_re, power_im, offset = lam_re, lam_im, 1
        while offset < u.shape[0]:
            add_re, add_im = _cmul(power_re, power_im, s_re[:-offset], s_im[:-offset])
            s_re = torch.cat([s_re[:offset], s_re[offset:] + add_re])
            s_im = torch.cat([s_im[:offset], s_im[offset:] + add_im])
            power_re, power_im = _cmul(power_re, power_im, power_re, power_im)
            offset *= 2
        return _apply(s_re, c_re) - _apply(s_im, c_im) + self.d * u, s_re[-1], s_im[-1]


class S5Block(nn.Module):
    """SSM's recurrent block of a stage: pre-norm S5, GELU plus the normed input, then a pre-norm GEGLU
    feed-forward plus its normed input. Maps and states are channel-first, like the ConvLSTM's."""

    def __init__(self, dim: int, dt_min: float = 1e-3, dt_max: float = 1e-1, discretization: str = "zoh",
                 bandlimit: float | None = None, bandlimit_dynamic: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ssm = S5(dim, dim, dt_min, dt_max, discretization, bandlimit, bandlimit_dynamic)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff_enc = nn.Linear(dim, 2 * dim, bias=False)
        self.ff_dec = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, x_re: torch.Tensor, x_im: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step: x (B, C, H, W), state re/im (B, C, H, W) -> (output, new state re, new state im)."""
        normed = self.norm(x.permute(0, 2, 3, 1))
        y, x_re, x_im = self.ssm(normed, x_re.permute(0, 2, 3, 1), x_im.permute(0, 2, 3, 1))
        out = self._feed_forward(y, normed).permute(0, 3, 1, 2)
        return out, x_re.permute(0, 3, 1, 2), x_im.permute(0, 3, 1, 2)

    def scan(self, x: torch.Tensor, x_re: torch.Tensor, x_im: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A clip: x (T, B, C, H, W), state (B, C, H, W) -> (outputs (T, B, C, H, W), last state re, im)."""
        normed = self.norm(x.permute(0, 1, 3, 4, 2))
        y, x_re, x_im = self.ssm.scan(normed, x_re.permute(0, 2, 3, 1), x_im.permute(0, 2, 3, 1))
        out = self._feed_forward(y, normed).permute(0, 1, 4, 2, 3)
        return out, x_re.permute(0, 3, 1, 2), x_im.permute(0, 3, 1, 2)

    def _feed_forward(self, y: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        x = F.gelu(y) + normed
        normed = self.ff_norm(x)
        value, gate = self.ff_enc(normed).chunk(2, dim=-1)
        return self.ff_dec(value * F.gelu(gate)) + normed


def set_step_scale(module: nn.Module, scale: float | torch.Tensor) -> None:
    """Run every S5 layer inside `module` with timesteps scaled by `scale` (inference / training window): one
    number, or a (B,) tensor with one scale per batch column."""
    if torch.is_tensor(scale):
        if scale.dim() != 1 or not bool((scale > 0).all()):
            raise ConfigError(f"S5 step scales must be a (B,) tensor of positive values, got {scale}")
    elif not scale > 0:
        raise ConfigError(f"S5 step scale must be positive, got {scale}")
    else:
        scale = float(scale)
    for layer in module.modules():
        if isinstance(layer, S5):
            layer.step_scale = scale
