"""AFF-style frequency-adaptive filter: a content-adaptive mask on the 2-D Fourier spectrum of a feature map.

Two interchangeable transforms with the same weights: `fft` (torch.fft, for training) and `matmul`
(a real DFT written as matrix products with fixed cos/sin bases, for export: torch.fft does not export
with the TorchScript ONNX exporter nor run in TensorRT 10). The matmul DFT is hand-written because no
library offers an exportable DFT; it matches torch.fft.rfft2/irfft2 (norm="ortho") to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def dft_bases(height: int, width: int) -> dict[str, torch.Tensor]:
    """Fixed float32 bases of an orthonormal rfft2: (H,H) cos/sin along H, (W, W//2+1) cos/sin along W,
    and the (W//2+1, W) inverse-rfft bases that fold in the Hermitian weights (1 for DC/Nyquist, else 2)."""
    n_h = np.arange(height)
    n_w = np.arange(width)
    k_w = np.arange(width // 2 + 1)
    angle_h = 2 * math.pi * np.outer(n_h, n_h) / height
    angle_w = 2 * math.pi * np.outer(n_w, k_w) / width
    fold = np.full(k_w.shape, 2.0)
    fold[0] = 1.0
    if width % 2 == 0:
        fold[-1] = 1.0
    bases = {
        "cos_h": np.cos(angle_h), "sin_h": np.sin(angle_h),
        "cos_w": np.cos(angle_w), "sin_w": np.sin(angle_w),
        "icos_w": (np.cos(angle_w) * fold).T, "isin_w": (np.sin(angle_w) * fold).T,
    }
    return {name: torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)) for name, b in bases.items()}


def rfft2_matmul(x: torch.Tensor, bases: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of rfft2(x, norm="ortho") over the last two dims, with matmuls only.

    The 1/sqrt(W) and 1/sqrt(H) scalings are applied after each 1-D transform so fp16 sums stay in range.
    """
    height, width = x.shape[-2:]
    a_re = torch.matmul(x, bases["cos_w"]) * (1.0 / math.sqrt(width))
    a_im = -torch.matmul(x, bases["sin_w"]) * (1.0 / math.sqrt(width))
    scale_h = 1.0 / math.sqrt(height)
    z_re = (torch.matmul(bases["cos_h"], a_re) + torch.matmul(bases["sin_h"], a_im)) * scale_h
    z_im = (torch.matmul(bases["cos_h"], a_im) - torch.matmul(bases["sin_h"], a_re)) * scale_h
    return z_re, z_im


def irfft2_matmul(z_re: torch.Tensor, z_im: torch.Tensor, bases: dict[str, torch.Tensor]) -> torch.Tensor:
    """irfft2(complex(z_re, z_im), norm="ortho") back to the (H, W) of the bases, with matmuls only."""
    height = z_re.shape[-2]
    width = bases["icos_w"].shape[-1]
    scale_h = 1.0 / math.sqrt(height)
    a_re = (torch.matmul(bases["cos_h"], z_re) - torch.matmul(bases["sin_h"], z_im)) * scale_h
    a_im = (torch.matmul(bases["cos_h"], z_im) + torch.matmul(bases["sin_h"], z_re)) * scale_h
    return (torch.matmul(a_re, bases["icos_w"]) - torch.matmul(a_im, bases["isin_w"])) * (1.0 / math.sqrt(width))


class ComplexConv1x1(nn.Module):
    """Grouped complex 1x1 convolution on (real, imag) pairs: (Wr + iWi)(xr + ixi) + (br + ibi)."""

    def __init__(self, dim: int, groups: int) -> None:
        super().__init__()
        self.weight_re = nn.Conv2d(dim, dim, 1, groups=groups, bias=False)
        self.weight_im = nn.Conv2d(dim, dim, 1, groups=groups, bias=False)
        self.bias = nn.Parameter(torch.zeros(2, dim, 1, 1))

    def forward(self, x_re: torch.Tensor, x_im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        re = self.weight_re(x_re) - self.weight_im(x_im) + self.bias[0]
        im = self.weight_re(x_im) + self.weight_im(x_re) + self.bias[1]
        return re, im


class AdaptiveFrequencyFilter(nn.Module):
    """x + irfft2(X * M(X)) where X = rfft2(x) and M = softshrink(C2(ReLU(C1(X)))) with complex 1x1 layers."""

    def __init__(self, dim: int, groups: int = 4, shrink: float = 0.01, impl: str = "fft") -> None:
        super().__init__()
        self.layer1 = ComplexConv1x1(dim, groups)
        self.layer2 = ComplexConv1x1(dim, groups)
        self.shrink = shrink
        self.impl = impl
        self._bases_size: tuple[int, int] | None = None

    def _bases(self, height: int, width: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The DFT bases for this map size, kept as non-persistent buffers (weights stay size-independent)."""
        if self._bases_size != (height, width):
            for name, basis in dft_bases(height, width).items():
                self.register_buffer(f"basis_{name}", basis.to(like.device), persistent=False)
            self._bases_size = (height, width)
        return {name: getattr(self, f"basis_{name}").to(like.device, like.dtype)
                for name in ("cos_h", "sin_h", "cos_w", "sin_w", "icos_w", "isin_w")}

    def mask(self, x_re: torch.Tensor, x_im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Content-adaptive complex mask computed from the spectrum itself."""
        re, im = self.layer1(x_re, x_im)
        re, im = self.layer2(F.relu(re), F.relu(im))
        return F.softshrink(re, self.shrink), F.softshrink(im, self.shrink)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> same shape."""
        height, width = x.shape[-2:]
        if self.impl == "fft":
            spectrum = torch.fft.rfft2(x.float(), norm="ortho")
            x_re, x_im = spectrum.real, spectrum.imag
        else:
            bases = self._bases(height, width, x)
            x_re, x_im = rfft2_matmul(x, bases)
        m_re, m_im = self.mask(x_re, x_im)
        y_re = x_re * m_re - x_im * m_im
        y_im = x_re * m_im + x_im * m_re
        if self.impl == "fft":
            filtered = torch.fft.irfft2(torch.complex(y_re, y_im), s=(height, width), norm="ortho").to(x.dtype)
        else:
            filtered = irfft2_matmul(y_re, y_im, bases)
        return x + filtered
