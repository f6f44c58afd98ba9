"""Trajectories as pure functions of time: random motion segments integrated once on a fine grid.

A seed fixes the segments; the grid (1 ms) is integrated at construction, and any time is then read by
linear interpolation, so rendering and ground truth at any timestamp agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GRID_S = 1e-3


@dataclass
class Trajectory:
    """Sampled state over time: `values` (T, K) on times `t_s` (T,), read with `at(t)` (seconds)."""

    t_s: np.ndarray
    values: np.ndarray

    def at(self, t: float) -> np.ndarray:
        """The K values at time t (seconds), linearly interpolated, clamped to the sampled span."""
        position = min(max(t / GRID_S, 0.0), len(self.t_s) - 1.0)
        i = min(int(position), len(self.t_s) - 2)
        frac = position - i
        return self.values[i] * (1.0 - frac) + self.values[i + 1] * frac

    def at_many(self, times_s: np.ndarray) -> np.ndarray:
        """(len(times), K) values at many times, same interpolation as `at`."""
        position = np.clip(np.asarray(times_s, np.float64) / GRID_S, 0.0, len(self.t_s) - 1.0)
        i = np.minimum(position.astype(np.int64), len(self.t_s) - 2)
        frac = (position - i)[:, None]
        return self.values[i] * (1.0 - frac) + self.values[i + 1] * frac


def stack_trajectories(paths: list[Trajectory], duration_s: float) -> Trajectory:
    """One trajectory whose values are the given ones side by side (same grid), for vectorised reads."""
    t = _grid(duration_s)
    if not paths:
        return Trajectory(t, np.zeros((len(t), 0)))
    return Trajectory(t, np.concatenate([p.values for p in paths], axis=1))


def _grid(duration_s: float) -> np.ndarray:
    return np.arange(int(np.ceil(duration_s / GRID_S)) + 2) * GRID_S


def object_trajectory(rng: np.random.Generator, duration_s: float, start: np.ndarray, heading: float,
                      speed_range: tuple[float, float], segment_s: tuple[float, float], accel: float,
                      max_turn_deg_s: float, p_stop: float, scale_rate: float,
                      scale_range: tuple[float, float], bounds: tuple | None) -> Trajectory:
    """(x, y, log_scale, facing) of one object: cruise, turn, accelerate and stop segments.

    facing is +1 / -1, the sign of the last non-zero horizontal velocity (a stopped car keeps its side).
    `bounds` (x0, y0, x1, y1) keeps an object in the scene once it is inside; None lets it leave.
    """
    t = _grid(duration_s)
    out = np.zeros((len(t), 4))
    x, y = float(start[0]), float(start[1])
    speed = rng.uniform(*speed_range)
    log_scale, (low, high) = 0.0, np.log(scale_range)
    facing = 1.0 if math.cos(heading) >= 0 else -1.0
    inside = bounds is None or _contains(bounds, x, y)
    segment_end, target_speed, turn_rate, scale_speed = 0.0, speed, 0.0, 0.0
    max_dv = accel * GRID_S
    for i, now in enumerate(t):
        if now >= segment_end:
            segment_end = now + rng.uniform(*segment_s)
            mode = int(rng.choice(4, p=_mode_probabilities(p_stop)))
            target_speed = 0.0 if mode == 3 else (speed if mode == 0 else rng.uniform(*speed_range))
            turn_rate = math.radians(rng.uniform(-max_turn_deg_s, max_turn_deg_s)) if mode == 1 else 0.0
            scale_speed = rng.uniform(-scale_rate, scale_rate)
        speed += min(max(target_speed - speed, -max_dv), max_dv)
        heading += turn_rate * GRID_S
        vx, vy = speed * math.cos(heading), speed * math.sin(heading)
        x, y = x + vx * GRID_S, y + vy * GRID_S
        if bounds is not None:
            inside = inside or _contains(bounds, x, y)
            if inside:
                heading = _bounce(bounds, x, y, heading)
        log_scale = min(max(log_scale + scale_speed * GRID_S, low), high)
        if abs(vx) > 1e-3:
            facing = 1.0 if vx > 0 else -1.0
        out[i] = (x, y, log_scale, facing)
    return Trajectory(t, out)


def camera_trajectory(rng: np.random.Generator, duration_s: float, centre: np.ndarray, pan_speed: float,
                      zoom_rate: float, zoom_range: tuple[float, float], p_static: float,
                      max_offset: np.ndarray) -> Trajectory:
    """(cx, cy, log_zoom) of the camera: pan segments (some static) and a slow zoom, kept near `centre`."""
    t = _grid(duration_s)
    out = np.zeros((len(t), 3))
    offset = np.zeros(2)
    velocity = np.zeros(2)
    target = np.zeros(2)
    log_zoom, zoom_speed, segment_end = 0.0, 0.0, 0.0
    low, high = np.log(zoom_range)
    for i, now in enumerate(t):
        if now >= segment_end:
            segment_end = now + rng.uniform(0.5, 2.0)
            static = rng.random() < p_static
            angle = rng.uniform(0, 2 * np.pi)
            target = np.zeros(2) if static else pan_speed * rng.uniform(0.3, 1.0) * np.array([np.cos(angle),
                                                                                            np.sin(angle)])
            zoom_speed = 0.0 if static else rng.uniform(-zoom_rate, zoom_rate)
        velocity += np.clip(target - velocity, -4 * pan_speed * GRID_S - 1e-9, 4 * pan_speed * GRID_S + 1e-9)
        offset = offset + velocity * GRID_S
        beyond = np.abs(offset) > max_offset
        velocity[beyond] = -np.sign(offset[beyond]) * np.abs(velocity[beyond])
        target[beyond] = -np.sign(offset[beyond]) * np.abs(target[beyond])
        log_zoom = float(np.clip(log_zoom + zoom_speed * GRID_S, low, high))
        out[i] = (centre[0] + offset[0], centre[1] + offset[1], log_zoom)
    return Trajectory(t, out)


def _mode_probabilities(p_stop: float) -> np.ndarray:
    moving = (1.0 - p_stop) / 3.0
    return np.array([moving, moving, moving, p_stop])


def _contains(bounds: tuple, x: float, y: float) -> bool:
    return bounds[0] <= x <= bounds[2] and bounds[1] <= y <= bounds[3]


def _bounce(bounds: tuple, x: float, y: float, heading: float) -> float:
    """Reflect the heading off the bounds' walls when the object is leaving them."""
    dx, dy = math.cos(heading), math.sin(heading)
    if not ((x < bounds[0] and dx < 0) or (x > bounds[2] and dx > 0) or (y < bounds[1] and dy < 0)
            or (y > bounds[3] and dy > 0)):
        return heading
    if (x < bounds[0] and dx < 0) or (x > bounds[2] and dx > 0):
        dx = -dx
    if (y < bounds[1] and dy < 0) or (y > bounds[3] and dy > 0):
        dy = -dy
    return math.atan2(dy, dx)
