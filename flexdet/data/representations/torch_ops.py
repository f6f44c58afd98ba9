"""The representations for events already in torch tensors (e.g. on a GPU), built with bincount /
index_add_ / scatter_reduce_ on the tensors' device; same definitions and, for the integer-valued ones,
the same bits as the Numba versions (the voxel grid is accumulated in int64 here too)."""

from __future__ import annotations

import numpy as np
import torch

from flexdet.errors import ConfigError, FlexdetError

Tensor = torch.Tensor


def events_to_tensors(events: np.ndarray, device: torch.device | str | None = None) -> dict:
    """Copy a structured event array into four contiguous tensors t (int64), x, y (int32), p (uint8)."""
    return {"t": torch.as_tensor(np.ascontiguousarray(events["t"], np.int64), device=device),
            "x": torch.as_tensor(np.ascontiguousarray(events["x"], np.int32), device=device),
            "y": torch.as_tensor(np.ascontiguousarray(events["y"], np.int32), device=device),
            "p": torch.as_tensor(np.ascontiguousarray(events["p"], np.uint8), device=device)}


def stacked_histogram_torch(t: Tensor, x: Tensor, y: Tensor, p: Tensor, height: int, width: int, bins: int = 10,
                            t_start: int | None = None, t_end: int | None = None, clip: int = 10) -> Tensor:
    """uint8 (2 * bins, H, W) on the events' device; the rule of `stacked_histogram` (RVT's without t_start/t_end)."""
    if not 1 <= clip <= 255 or bins < 1:
        raise ConfigError(f"need bins >= 1 and clip in [1, 255], got bins={bins}, clip={clip}")
    t, x, y, p, t_base, span = _window(t, x, y, p, height, width, t_start, t_end)
    b = torch.div((t - t_base) * bins, span, rounding_mode="floor").clamp_(max=bins - 1)
    index = ((p * bins + b) * height + y) * width + x
    counts = torch.bincount(index, minlength=2 * bins * height * width)
    return counts.clamp_(max=clip).to(torch.uint8).reshape(2 * bins, height, width)


def event_frame_torch(t: Tensor, x: Tensor, y: Tensor, p: Tensor, height: int, width: int,
                      t_start: int | None = None, t_end: int | None = None, clip: int = 65535) -> Tensor:
    """int32 (2, H, W) counts per polarity saturating at `clip` (values of `event_frame`)."""
    t, x, y, p, _, _ = _window(t, x, y, p, height, width, t_start, t_end)
    counts = torch.bincount((p * height + y) * width + x, minlength=2 * height * width)
    return counts.clamp_(max=clip).to(torch.int32).reshape(2, height, width)


def voxel_grid_torch(t: Tensor, x: Tensor, y: Tensor, p: Tensor, height: int, width: int, bins: int = 5,
                     t_start: int | None = None, t_end: int | None = None) -> Tensor:
    """float32 (bins, H, W), the definition of `voxel_grid`, exact int64 sums then one division."""
    if bins < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    t, x, y, p, t_base, span = _window(t, x, y, p, height, width, t_start, t_end)
    plane = height * width
    num = (t - t_base) * (bins - 1)
    b = torch.div(num, span, rounding_mode="floor")
    rest = num - b * span
    sign = 2 * p - 1
    pixel = y * width + x
    acc = torch.zeros(bins * plane, dtype=torch.int64, device=t.device)
    acc.index_add_(0, b * plane + pixel, sign * (span - rest))
    upper = b + 1 < bins
    acc.index_add_(0, ((b + 1) * plane + pixel)[upper], (sign * rest)[upper])
    return (acc.to(torch.float64) / span).to(torch.float32).reshape(bins, height, width)


def time_surface_torch(t: Tensor, x: Tensor, y: Tensor, p: Tensor, height: int, width: int,
                       tau_us: float | None = None, t_start: int | None = None,
                       t_end: int | None = None) -> Tensor:
    """float32 (2, H, W), the definition of `time_surface` (latest event per pixel by scatter_reduce amax)."""
    t, x, y, p, t_base, span = _window(t, x, y, p, height, width, t_start, t_end)
    if t_end is not None:
        t_ref, length = int(t_end), int(t_end) - int(t_start)
    elif len(t):
        t_ref, length = int(t[-1]), int(t[-1] - t[0])
    else:
        t_ref, length = 0, 0
    tau = max(length, 1) / 2 if tau_us is None else float(tau_us)
    if not tau > 0:
        raise ConfigError(f"tau_us must be positive, got {tau_us}")
    never = torch.iinfo(torch.int64).min
    last = torch.full((2 * height * width,), never, dtype=torch.int64, device=t.device)
    last.scatter_reduce_(0, (p * height + y) * width + x, t, reduce="amax", include_self=True)
    value = torch.exp(-(t_ref - last).to(torch.float64) / tau).to(torch.float32)
    return torch.where(last != never, value, torch.zeros_like(value)).reshape(2, height, width)


def _window(t, x, y, p, height, width, t_start, t_end):
    """Validate on the device, keep [t_start, t_end) (or all), and return int64 columns, time base, span."""
    t, x, y, p = t.long(), x.long(), y.long(), p.long()
    bad = (x < 0) | (x >= width) | (y < 0) | (y >= height) | (p < 0) | (p > 1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise FlexdetError(f"events: event {i} has x={int(x[i])}, y={int(y[i])}, p={int(p[i])} outside a "
                           f"{width}x{height} sensor or polarity not 0/1")
    if len(t) > 1 and bool((t[1:] < t[:-1]).any()):
        i = int(torch.nonzero(t[1:] < t[:-1])[0]) + 1
        raise FlexdetError(f"events: event {i} is earlier than event {i - 1}; events must be time-sorted")
    if (t_start is None) != (t_end is None):
        raise ConfigError("give both t_start and t_end, or neither")
    if t_start is None:
        t_base = int(t[0]) if len(t) else 0
        span = max(int(t[-1]) - t_base, 1) if len(t) else 1
        return t, x, y, p, t_base, span
    if int(t_end) < int(t_start):
        raise ConfigError(f"window ends before it starts: t_start={t_start}, t_end={t_end}")
    keep = (t >= int(t_start)) & (t < int(t_end))
    return t[keep], x[keep], y[keep], p[keep], int(t_start), max(int(t_end) - int(t_start), 1)
