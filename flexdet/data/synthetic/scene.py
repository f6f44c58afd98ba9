"""A procedural scene fixed by (config, seed): world texture, camera path, objects with looks and paths.

Everything about it is a pure function of time: `render(t)`, `boxes(t)`, `coverage(t)` can be asked at any
timestamp, in any order, and always agree with each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexdet.data.synthetic import render as kernels
from flexdet.data.synthetic.config import SceneConfig
from flexdet.data.synthetic.motion import Trajectory, camera_trajectory, object_trajectory, stack_trajectories
from flexdet.data.synthetic.textures import (
    Sprite,
    background_texture,
    car_sprite,
    mirrored,
    pedestrian_sprite,
    to_luma,
)

WORLD_MARGIN = 1.8  # world texture size relative to the sensor, room for the camera to pan
SPRITE_RESOLUTION = 1.5  # sprite pixels per world pixel, so zooming in stays sharp


@dataclass
class SceneObject:
    """One object: class name, track id, first atlas entry (facing right; +1 is mirrored), path."""

    class_name: str
    track_id: int
    atlas_index: int
    mirrors: bool
    path: Trajectory


class Scene:
    """World, camera and objects (kept back-to-front) of one synthetic sequence."""

    def __init__(self, config: SceneConfig, seed: int) -> None:
        self.config = config
        self.width, self.height = config.width, config.height
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
        world_w, world_h = int(self.width * WORLD_MARGIN), int(self.height * WORLD_MARGIN)
        self.world_rgb = background_texture(rng, world_w, world_h, config.texture_contrast)
        self.world_luma = np.ascontiguousarray(to_luma(self.world_rgb))
        centre = np.array([world_w / 2, world_h / 2])
        camera = config.camera
        min_zoom = camera.zoom_range[0]
        max_offset = np.maximum(0.0, centre - np.array([self.width, self.height]) / (2 * min_zoom) - 2)
        self.camera_path = camera_trajectory(rng, config.duration_s, centre, camera.pan_speed_px_s,
                                             camera.zoom_rate, camera.zoom_range, camera.p_static, max_offset)
        sprites: list[Sprite] = []
        self.objects: list[SceneObject] = []
        count = int(rng.integers(config.objects.count[0], config.objects.count[1] + 1))
        for track_id in range(count):
            class_name = str(rng.choice(config.objects.classes))
            sprite = self._draw(rng, class_name)
            mirrors = class_name == "car"
            self.objects.append(SceneObject(class_name, track_id, len(sprites), mirrors,
                                            self._path(rng, class_name, sprite, centre)))
            sprites.extend([sprite, mirrored(sprite)])
        self._build_atlas(sprites)
        self.first_entry = np.array([obj.atlas_index for obj in self.objects], np.int64)
        self.mirrors = np.array([obj.mirrors for obj in self.objects], bool)
        self.object_paths = stack_trajectories([obj.path for obj in self.objects], config.duration_s)
        self._flicker_phase = rng.uniform(0, 2 * np.pi)
        self._exposure_period = rng.uniform(2.0, 6.0)

    def _draw(self, rng: np.random.Generator, class_name: str) -> Sprite:
        objects = self.config.objects
        if class_name == "car":
            height = rng.uniform(*objects.car_height) * self.height * SPRITE_RESOLUTION
            return car_sprite(rng, int(round(height)), rng.uniform(*objects.car_aspect))
        height = rng.uniform(*objects.pedestrian_height) * self.height * SPRITE_RESOLUTION
        return pedestrian_sprite(rng, int(round(height)), rng.uniform(*objects.pedestrian_aspect))

    def _path(self, rng: np.random.Generator, class_name: str, sprite: Sprite, centre: np.ndarray) -> Trajectory:
        """Start inside the view, or just outside a border heading in; stay inside unless it is a leaver."""
        config, motion = self.config, self.config.motion
        half = np.array([self.width, self.height]) / 2
        bounds = tuple(float(b) for b in np.concatenate([centre - half, centre + half]))
        x0, y0, x1, y1 = sprite.box
        size = np.array([x1 - x0, y1 - y0]) / SPRITE_RESOLUTION
        heading = rng.uniform(0, 2 * np.pi)
        if rng.random() < config.objects.p_enter:
            side = int(rng.integers(4))
            axis, sign = side % 2, (1 if side < 2 else -1)
            start = centre + rng.uniform(-0.6, 0.6, 2) * half
            start[axis] = centre[axis] - sign * (half[axis] + size[axis] * 0.6)
            inward = np.zeros(2)
            inward[axis] = sign
            heading = float(np.arctan2(inward[1], inward[0]) + rng.uniform(-0.5, 0.5))
        else:
            start = centre + rng.uniform(-0.8, 0.8, 2) * (half - size / 2).clip(min=1)
        factor = motion.pedestrian_speed_factor if class_name == "pedestrian" else 1.0
        speed_range = (motion.speed_px_s[0] * factor, motion.speed_px_s[1] * factor)
        leaves = rng.random() < config.objects.p_leave
        return object_trajectory(rng, config.duration_s, start, heading, speed_range, motion.segment_s,
                                 motion.accel_px_s2, motion.max_turn_deg_s, motion.p_stop, motion.scale_rate,
                                 motion.scale_range, None if leaves else bounds)

    def _build_atlas(self, sprites: list[Sprite]) -> None:
        """Pack sprites into padded arrays: premultiplied RGB + alpha, and luma + alpha, for the kernels."""
        n = max(1, len(sprites))
        height = max([s.rgba.shape[0] for s in sprites], default=1)
        width = max([s.rgba.shape[1] for s in sprites], default=1)
        self.atlas_rgb = np.zeros((n, height, width, 4), np.float32)
        self.atlas_luma = np.zeros((n, height, width, 2), np.float32)
        self.sprite_sizes = np.zeros((n, 2), np.float64)
        self.sprite_boxes = np.zeros((n, 4), np.float64)
        for i, sprite in enumerate(sprites):
            h, w = sprite.rgba.shape[:2]
            alpha = sprite.rgba[..., 3:4]
            self.atlas_rgb[i, :h, :w, :3] = sprite.rgba[..., :3] * alpha
            self.atlas_rgb[i, :h, :w, 3:] = alpha
            self.atlas_luma[i, :h, :w, :1] = to_luma(sprite.rgba[..., :3]) * alpha
            self.atlas_luma[i, :h, :w, 1:] = alpha
            self.sprite_sizes[i] = (h, w)
            self.sprite_boxes[i] = sprite.box

    def camera(self, t_s: float) -> tuple[float, float, float]:
        """Camera centre (world px) and zoom at time t (seconds)."""
        cx, cy, log_zoom = self.camera_path.at(t_s)
        return float(cx), float(cy), float(np.exp(log_zoom))

    def object_rows(self, t_s: float) -> np.ndarray:
        """(N, 6) float64 kernel rows (ox, oy, scale, atlas, sprite_h, sprite_w), back to front."""
        return self.object_rows_many(np.array([t_s]))[0]

    def object_rows_many(self, times_s: np.ndarray) -> np.ndarray:
        """(T, N, 6) kernel rows for many times at once (vectorised; used for dense ground truth)."""
        times_s = np.asarray(times_s, np.float64)
        camera = self.camera_path.at_many(times_s)
        zoom = np.exp(camera[:, 2:3])
        states = self.object_paths.at_many(times_s).reshape(len(times_s), len(self.objects), 4)
        index = self.first_entry + ((states[..., 3] < 0) & self.mirrors)
        scale = zoom * np.exp(states[..., 2]) / SPRITE_RESOLUTION
        box = self.sprite_boxes[index]
        screen_x = (states[..., 0] - camera[:, :1]) * zoom + self.width / 2
        screen_y = (states[..., 1] - camera[:, 1:2]) * zoom + self.height / 2
        rows = np.empty((len(times_s), len(self.objects), 6), np.float64)
        rows[..., kernels.OX] = screen_x - scale * (box[..., 0] + box[..., 2]) / 2
        rows[..., kernels.OY] = screen_y - scale * (box[..., 1] + box[..., 3]) / 2
        rows[..., kernels.SCALE] = scale
        rows[..., kernels.ATLAS] = index
        rows[..., kernels.SPRITE_H:] = self.sprite_sizes[index]
        return rows

    def gain(self, t_s: float) -> float:
        """Global illumination factor: slow exposure drift times mains-like flicker."""
        config = self.config
        drift = np.exp(config.exposure_drift * np.sin(2 * np.pi * t_s / self._exposure_period))
        flicker = 1.0 + config.flicker_amplitude * np.sin(2 * np.pi * config.flicker_hz * t_s + self._flicker_phase)
        return float(drift * flicker)

    def full_region(self) -> np.ndarray:
        """The whole sensor as a kernel region (u0, u1, v0, v1)."""
        return np.array([0, self.width, 0, self.height], np.int64)

    def changed_region(self, t0_s: float, t1_s: float) -> np.ndarray:
        """Pixels whose radiance can differ between t0 and t1: everything if the camera moved, else the
        union of the extents of the objects that moved (empty region when nothing moved)."""
        if self.camera(t0_s) != self.camera(t1_s):
            return self.full_region()
        rows0, rows1 = self.object_rows(t0_s), self.object_rows(t1_s)
        moved = np.any(rows0 != rows1, axis=1)
        if not moved.any():
            return np.zeros(4, np.int64)
        extents = np.concatenate([kernels.object_extents(rows0[moved], self.width, self.height),
                                  kernels.object_extents(rows1[moved], self.width, self.height)])
        return np.array([extents[:, 0].min(), extents[:, 1].max(), extents[:, 2].min(), extents[:, 3].max()],
                        np.int64)

    def render(self, t_s: float, rgb: bool = False, out: np.ndarray | None = None,
               region: np.ndarray | None = None) -> np.ndarray:
        """Scene radiance at time t without the global gain: (H, W, 3) RGB or (H, W, 1) luma, float32.

        With `region` (u0, u1, v0, v1) only those pixels of `out` are redrawn.
        """
        world, atlas = (self.world_rgb, self.atlas_rgb) if rgb else (self.world_luma, self.atlas_luma)
        if out is None:
            out = np.empty((self.height, self.width, world.shape[2]), np.float32)
        cx, cy, zoom = self.camera(t_s)
        kernels.render_kernel(out, world, cx, cy, zoom, atlas, self.object_rows(t_s),
                              self.full_region() if region is None else region)
        return out

    def boxes(self, t_s: float) -> np.ndarray:
        """(N, 4) float64 amodal boxes x0, y0, x1, y1 on the sensor (not clipped), back-to-front order."""
        return self.boxes_from_rows(self.object_rows(t_s))

    def boxes_from_rows(self, rows: np.ndarray) -> np.ndarray:
        """Amodal boxes (..., 4) x0, y0, x1, y1 of kernel rows (..., 6)."""
        boxes = self.sprite_boxes[rows[..., kernels.ATLAS].astype(int)] * rows[..., kernels.SCALE, None]
        return boxes + rows[..., [kernels.OX, kernels.OY, kernels.OX, kernels.OY]]

    def coverage(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Per object: in-frame mask pixel count and the count not hidden by nearer objects."""
        return self.coverage_from_rows(self.object_rows(t_s))

    def coverage_from_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coverage counts for kernel rows (N, 6) of one instant."""
        return kernels.coverage_kernel(self.atlas_luma, np.ascontiguousarray(rows), self.width, self.height, 1)

    def masks(self, t_s: float) -> np.ndarray:
        """(N, H, W) bool: each object's own alpha >= 0.5 mask, ignoring occlusion."""
        rows = self.object_rows(t_s)
        masks = np.zeros((len(rows), self.height, self.width), bool)
        for k, row in enumerate(rows):
            kernels.mask_kernel(masks[k], self.atlas_luma, row, 1)
        return masks
