"""Augmentation fixed per clip (h-flip, zoom in, zoom out), applied alike to histograms, frames and boxes.

Every augmentation is one affine map of input pixels, x' = scale * x + offset_x (then mirrored when
flipped), so events, images and boxes cannot disagree; images are resampled with `grid_sample` (nearest
for event counts, bilinear for RGB), boxes are mapped exactly and clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from flexdet.training.config import AugmentConfig


@dataclass(frozen=True)
class ClipAugment:
    """x' = scale * x + dx, y' = scale * y + dy, then x' -> width - x' when `flip`."""

    flip: bool = False
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0

    @property
    def is_identity(self) -> bool:
        return not self.flip and self.scale == 1.0 and self.dx == 0.0 and self.dy == 0.0


def draw_augment(rng: np.random.Generator, config: AugmentConfig, width: int, height: int) -> ClipAugment:
    """Random parameters for one clip: flip with prob `hflip`; zoom in (crop, scale in [1, zoom_in_max]) or
    zoom out (shrink into a zero canvas, scale in [1 / zoom_out_max, 1]) with their probabilities."""
    flip = bool(rng.random() < config.hflip)
    choice = rng.random()
    if choice < config.zoom_in_prob and config.zoom_in_max > 1:
        scale = float(rng.uniform(1.0, config.zoom_in_max))
    elif choice < config.zoom_in_prob + config.zoom_out_prob and config.zoom_out_max > 1:
        scale = float(1.0 / rng.uniform(1.0, config.zoom_out_max))
    else:
        return ClipAugment(flip=flip)
    # Offsets keep the zoomed image covering (zoom in) or inside (zoom out) the canvas.
    dx = float(rng.uniform(min(0.0, width * (1 - scale)), max(0.0, width * (1 - scale))))
    dy = float(rng.uniform(min(0.0, height * (1 - scale)), max(0.0, height * (1 - scale))))
    return ClipAugment(flip, scale, dx, dy)


def augment_images(images: torch.Tensor, augment: ClipAugment, mode: str) -> torch.Tensor:
    """(N, C, H, W) images resampled by the clip's map; `mode` "nearest" (counts) or "bilinear" (RGB)."""
    if augment.is_identity:
        return images
    if augment.scale == 1.0 and augment.dx == 0.0 and augment.dy == 0.0:
        return images.flip(-1)
    height, width = images.shape[-2:]
    # Output pixel centre u (px) reads input x = (u' - dx) / scale with u' the un-mirrored position.
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    if augment.flip:
        xs = width - xs
    src_x = (xs - augment.dx) / augment.scale
    src_y = (ys - augment.dy) / augment.scale
    grid = torch.stack(torch.meshgrid(src_y / height * 2 - 1, src_x / width * 2 - 1, indexing="ij")[::-1], dim=-1)
    grid = grid.to(images.device)[None].expand(images.shape[0], -1, -1, -1)
    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.to(images.dtype)


def augment_boxes(xyxy: np.ndarray, augment: ClipAugment, width: int, height: int) -> np.ndarray:
    """(N, 4) xyxy boxes mapped by the clip's augmentation and clipped to the image."""
    out = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4).copy()
    if augment.is_identity:
        return out
    out[:, 0::2] = out[:, 0::2] * augment.scale + augment.dx
    out[:, 1::2] = out[:, 1::2] * augment.scale + augment.dy
    if augment.flip:
        out[:, [0, 2]] = width - out[:, [2, 0]]
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out
