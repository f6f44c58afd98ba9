"""Numba kernels that draw the scene at one instant: background world seen through the camera, then the
object sprites back to front (premultiplied alpha), plus per-object coverage for masks and occlusion.

Written by hand because the sensor model samples the scene hundreds of times per simulated second and
only the changed region needs redrawing. Single-threaded on purpose: datasets parallelise over sequences,
and on a shared CPU per-sample thread synchronisation costs more than it gains.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Columns of the per-object parameter rows the kernels read (back-to-front order).
OX, OY, SCALE, ATLAS, SPRITE_H, SPRITE_W = range(6)
MASK_ALPHA = 0.5


def object_extents(rows: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4) int64 pixel ranges u0, u1, v0, v1 each object can touch (same rule as the kernels)."""
    ox, oy, scale = rows[:, OX], rows[:, OY], rows[:, SCALE]
    u0 = np.clip(np.floor(ox - scale), 0, width)
    u1 = np.clip(np.ceil(ox + scale * (rows[:, SPRITE_W] + 1)), 0, width)
    v0 = np.clip(np.floor(oy - scale), 0, height)
    v1 = np.clip(np.ceil(oy + scale * (rows[:, SPRITE_H] + 1)), 0, height)
    return np.stack([u0, u1, v0, v1], axis=1).astype(np.int64)


@njit(inline="always")
def _sprite_sample(atlas, index, channel, sy, sx, sprite_h, sprite_w):
    """Bilinear sample of one atlas channel at continuous pixel-centre coordinates; zero outside."""
    y0 = math.floor(sy)
    x0 = math.floor(sx)
    fy = sy - y0
    fx = sx - x0
    total = 0.0
    for dy in range(2):
        yy = y0 + dy
        if yy < 0 or yy >= sprite_h:
            continue
        wy = fy if dy == 1 else 1.0 - fy
        for dx in range(2):
            xx = x0 + dx
            if xx < 0 or xx >= sprite_w:
                continue
            wx = fx if dx == 1 else 1.0 - fx
            total += wy * wx * atlas[index, yy, xx, channel]
    return total


@njit(inline="always")
def _object_extent(row, width, height):
    """Screen pixel ranges [u0, u1) x [v0, v1) an object can touch, clipped to the frame."""
    ox, oy, scale = row[OX], row[OY], row[SCALE]
    u0 = max(0, int(math.floor(ox - scale)))
    v0 = max(0, int(math.floor(oy - scale)))
    u1 = min(width, int(math.ceil(ox + scale * (row[SPRITE_W] + 1))))
    v1 = min(height, int(math.ceil(oy + scale * (row[SPRITE_H] + 1))))
    return u0, u1, v0, v1


@njit(cache=True)
def render_kernel(out, world, cam_x, cam_y, zoom, atlas, objects, region):
    """Draw into `out` (H, W, C) inside `region` (u0, u1, v0, v1): the world (Hw, Ww, C) seen through the
    camera, then the atlas sprites (C colour channels premultiplied, then alpha) back to front."""
    height, width, channels = out.shape
    world_h, world_w = world.shape[0], world.shape[1]
    ru0, ru1, rv0, rv1 = region[0], region[1], region[2], region[3]
    for v in range(rv0, rv1):
        wy = cam_y + (v + 0.5 - 0.5 * height) / zoom - 0.5
        wy = min(max(wy, 0.0), world_h - 1.0)
        y0 = min(int(wy), world_h - 2)
        fy = wy - y0
        for u in range(ru0, ru1):
            wx = cam_x + (u + 0.5 - 0.5 * width) / zoom - 0.5
            wx = min(max(wx, 0.0), world_w - 1.0)
            x0 = min(int(wx), world_w - 2)
            fx = wx - x0
            for c in range(channels):
                top = world[y0, x0, c] * (1.0 - fx) + world[y0, x0 + 1, c] * fx
                bottom = world[y0 + 1, x0, c] * (1.0 - fx) + world[y0 + 1, x0 + 1, c] * fx
                out[v, u, c] = top * (1.0 - fy) + bottom * fy
    for k in range(objects.shape[0]):
        row = objects[k]
        u0, u1, v0, v1 = _object_extent(row, width, height)
        u0, u1, v0, v1 = max(u0, ru0), min(u1, ru1), max(v0, rv0), min(v1, rv1)
        index = int(row[ATLAS])
        sprite_h, sprite_w = int(row[SPRITE_H]), int(row[SPRITE_W])
        for v in range(v0, v1):
            sy = (v + 0.5 - row[OY]) / row[SCALE] - 0.5
            for u in range(u0, u1):
                sx = (u + 0.5 - row[OX]) / row[SCALE] - 0.5
                alpha = _sprite_sample(atlas, index, channels, sy, sx, sprite_h, sprite_w)
                if alpha <= 0.0:
                    continue
                for c in range(channels):
                    colour = _sprite_sample(atlas, index, c, sy, sx, sprite_h, sprite_w)
                    out[v, u, c] = out[v, u, c] * (1.0 - alpha) + colour


@njit(cache=True)
def coverage_kernel(atlas, objects, width, height, alpha_channel):
    """Per object: in-frame pixels with alpha >= 0.5 (`own`) and those not covered by a nearer object."""
    n = objects.shape[0]
    own = np.zeros(n, np.int64)
    visible = np.zeros(n, np.int64)
    for k in range(n):
        row = objects[k]
        u0, u1, v0, v1 = _object_extent(row, width, height)
        index = int(row[ATLAS])
        for v in range(v0, v1):
            sy = (v + 0.5 - row[OY]) / row[SCALE] - 0.5
            for u in range(u0, u1):
                sx = (u + 0.5 - row[OX]) / row[SCALE] - 0.5
                if _sprite_sample(atlas, index, alpha_channel, sy, sx, int(row[SPRITE_H]),
                                  int(row[SPRITE_W])) < MASK_ALPHA:
                    continue
                own[k] += 1
                covered = False
                for j in range(k + 1, n):
                    front = objects[j]
                    fy = (v + 0.5 - front[OY]) / front[SCALE] - 0.5
                    fx = (u + 0.5 - front[OX]) / front[SCALE] - 0.5
                    if _sprite_sample(atlas, int(front[ATLAS]), alpha_channel, fy, fx, int(front[SPRITE_H]),
                                      int(front[SPRITE_W])) >= MASK_ALPHA:
                        covered = True
                        break
                if not covered:
                    visible[k] += 1
    return own, visible


@njit(cache=True)
def coverage_many_kernel(atlas, rows, width, height, alpha_channel):
    """coverage_kernel for rows (T, N, 6) of many instants: two (T, N) count arrays."""
    own = np.zeros(rows.shape[:2], np.int64)
    visible = np.zeros(rows.shape[:2], np.int64)
    for i in range(rows.shape[0]):
        own[i], visible[i] = coverage_kernel(atlas, rows[i], width, height, alpha_channel)
    return own, visible


@njit(cache=True)
def mask_kernel(out, atlas, row, alpha_channel):
    """Fill boolean `out` (H, W) with one object's own alpha >= 0.5 mask (occlusion ignored)."""
    height, width = out.shape
    u0, u1, v0, v1 = _object_extent(row, width, height)
    index = int(row[ATLAS])
    for v in range(v0, v1):
        sy = (v + 0.5 - row[OY]) / row[SCALE] - 0.5
        for u in range(u0, u1):
            sx = (u + 0.5 - row[OX]) / row[SCALE] - 0.5
            out[v, u] = _sprite_sample(atlas, index, alpha_channel, sy, sx, int(row[SPRITE_H]),
                                       int(row[SPRITE_W])) >= MASK_ALPHA
