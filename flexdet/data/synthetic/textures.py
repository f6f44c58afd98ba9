"""Procedural looks: a textured background world and per-object sprites (RGBA) for cars and pedestrians.

Drawn with OpenCV at 4x and area-downsampled so edges are anti-aliased (smooth log-intensity changes,
like a real lens). Sprites are drawn once per object; rendering samples them with a moving transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUPERSAMPLE = 4
EDGE_SOFTNESS = 0.8  # sprite pixels (Gaussian sigma)
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Sprite:
    """One object's look: RGBA float32 image (H, W, 4) in [0, 1] and the tight box of alpha >= 0.5."""

    rgba: np.ndarray
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in sprite pixels (continuous coordinates)


def to_luma(rgb: np.ndarray) -> np.ndarray:
    """Luminance (Rec. 601 weights) of an (..., 3) RGB array, keeping a trailing channel axis."""
    return (rgb[..., :3] @ LUMA_WEIGHTS)[..., None].astype(np.float32)


def background_texture(rng: np.random.Generator, width: int, height: int, contrast: float) -> np.ndarray:
    """An RGB float32 world (height, width, 3): multi-octave smooth noise tinted by a palette, plus blocks."""
    base = np.zeros((height, width), np.float32)
    for octave, weight in ((16, 0.25), (40, 0.35), (96, 0.4)):
        small = rng.random((max(2, height // octave + 2), max(2, width // octave + 2))).astype(np.float32)
        base += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    base = (base - base.min()) / max(1e-6, float(base.max() - base.min()))
    palette = rng.uniform(0.25, 0.8, size=(2, 3)).astype(np.float32)
    rgb = palette[0] * (1 - base[..., None]) + palette[1] * base[..., None]
    for _ in range(int(width * height / 6000) + 2):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(8, max(9, width // 6))), int(rng.integers(8, max(9, height // 6)))
        tint = rng.uniform(0.2, 0.9, size=3).astype(np.float32)
        block = rgb[y0:y0 + h, x0:x0 + w]
        block[:] = 0.5 * block + 0.5 * tint
    rgb = cv2.GaussianBlur(rgb, (0, 0), 1.5)
    mean = rgb.mean(axis=(0, 1), keepdims=True)
    return np.clip(mean + contrast * 2.0 * (rgb - mean), 0.08, 1.0).astype(np.float32)


def car_sprite(rng: np.random.Generator, height_px: int, aspect: float) -> Sprite:
    """A side-view car: wide body in a random saturated colour, a cabin with dark windows, two wheels."""
    s = SUPERSAMPLE
    h = max(8, height_px) * s
    w = int(round(h * aspect))
    pad = 2 * s
    canvas = np.zeros((h + 2 * pad, w + 2 * pad, 4), np.float32)
    colour = _saturated_colour(rng)
    body_top = int(h * rng.uniform(0.4, 0.5))
    wheel_r = int(h * rng.uniform(0.17, 0.22))
    body_bottom = h - wheel_r
    cabin_x0 = int(w * rng.uniform(0.18, 0.3))
    cabin_x1 = int(w * rng.uniform(0.62, 0.78))
    fill = (*colour, 1.0)
    cv2.rectangle(canvas, (pad, pad + body_top), (pad + w - 1, pad + body_bottom), fill, -1, cv2.LINE_AA)
    cv2.fillPoly(canvas, [np.array([[pad + cabin_x0 - h // 6, pad + body_top], [pad + cabin_x0, pad],
                                    [pad + cabin_x1, pad], [pad + cabin_x1 + h // 6, pad + body_top]])],
                 fill, cv2.LINE_AA)
    glass = (*(rng.uniform(0.05, 0.25) * np.ones(3)), 1.0)
    inset = max(s, h // 12)
    middle = (cabin_x0 + cabin_x1) // 2
    cv2.rectangle(canvas, (pad + cabin_x0 + inset, pad + inset), (pad + middle - inset, pad + body_top - inset),
                  glass, -1, cv2.LINE_AA)
    cv2.rectangle(canvas, (pad + middle + inset, pad + inset), (pad + cabin_x1 - inset, pad + body_top - inset),
                  glass, -1, cv2.LINE_AA)
    for cx in (int(w * 0.22), int(w * 0.78)):
        cv2.circle(canvas, (pad + cx, pad + h - wheel_r), wheel_r, (0.05, 0.05, 0.05, 1.0), -1, cv2.LINE_AA)
        cv2.circle(canvas, (pad + cx, pad + h - wheel_r), wheel_r // 2, (0.6, 0.6, 0.6, 1.0), -1, cv2.LINE_AA)
    return _finish(canvas, rng)


def pedestrian_sprite(rng: np.random.Generator, height_px: int, aspect: float) -> Sprite:
    """A standing person: round head, shirt in a random colour, dark trousers as two legs; tall and narrow."""
    s = SUPERSAMPLE
    h = max(12, height_px) * s
    w = max(4 * s, int(round(h * aspect)))
    pad = 2 * s
    canvas = np.zeros((h + 2 * pad, w + 2 * pad, 4), np.float32)
    head_r = max(s, int(h * 0.085))
    cx = pad + w // 2
    skin = (*rng.uniform([0.55, 0.4, 0.3], [0.95, 0.8, 0.7]), 1.0)
    shirt = (*_saturated_colour(rng), 1.0)
    trousers = (*(rng.uniform(0.05, 0.35) * np.ones(3)), 1.0)
    torso_top, torso_bottom = pad + 2 * head_r, pad + int(h * 0.58)
    cv2.circle(canvas, (cx, pad + head_r), head_r, skin, -1, cv2.LINE_AA)
    cv2.rectangle(canvas, (pad, torso_top), (pad + w - 1, torso_bottom), shirt, -1, cv2.LINE_AA)
    leg_w = max(s, int(w * 0.38))
    cv2.rectangle(canvas, (pad + int(w * 0.06), torso_bottom), (pad + int(w * 0.06) + leg_w, pad + h - 1),
                  trousers, -1, cv2.LINE_AA)
    right_leg = pad + w - 1 - int(w * 0.06)
    cv2.rectangle(canvas, (right_leg - leg_w, torso_bottom), (right_leg, pad + h - 1), trousers, -1, cv2.LINE_AA)
    return _finish(canvas, rng)


def mirrored(sprite: Sprite) -> Sprite:
    """The sprite flipped left-right (an object driving the other way), with its box flipped too."""
    width = sprite.rgba.shape[1]
    x0, y0, x1, y1 = sprite.box
    return Sprite(np.ascontiguousarray(sprite.rgba[:, ::-1]), (width - x1, y0, width - x0, y1))


def _saturated_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """A saturated colour that is clearly darker or brighter than the mid-grey world (events need contrast)."""
    value = rng.uniform(50, 100) if rng.random() < 0.5 else rng.uniform(215, 255)
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(150, 255), value]]], np.uint8)
    return tuple(float(c) / 255 for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> Sprite:
    """Add a faint grain, area-downsample by SUPERSAMPLE (premultiplied alpha), find the alpha >= 0.5 box."""
    grain = 1.0 + 0.08 * cv2.GaussianBlur(rng.standard_normal(canvas.shape[:2]).astype(np.float32), (0, 0), 3)
    canvas[..., :3] = np.clip(canvas[..., :3] * grain[..., None], 0, 1)
    canvas[..., :3] *= canvas[..., 3:4]  # premultiplied so area averaging does not bleed black into colour
    h, w = canvas.shape[0] // SUPERSAMPLE, canvas.shape[1] // SUPERSAMPLE
    small = cv2.resize(canvas[:h * SUPERSAMPLE, :w * SUPERSAMPLE], (w, h), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), EDGE_SOFTNESS)  # lens blur: bounds the per-sample log change
    alpha = small[..., 3:4]
    small[..., :3] = np.where(alpha > 1e-4, small[..., :3] / np.maximum(alpha, 1e-4), 0.0)
    solid = np.argwhere(alpha[..., 0] >= 0.5)
    (y0, x0), (y1, x1) = solid.min(axis=0), solid.max(axis=0) + 1
    return Sprite(np.ascontiguousarray(np.clip(small, 0, 1), dtype=np.float32),
                  (float(x0), float(y0), float(x1), float(y1)))
