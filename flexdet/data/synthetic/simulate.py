"""Simulate one sequence: events from the ESIM sensor with adaptive sampling, RGB frames with motion
blur, and exact ground-truth boxes at label times and every millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.events import EVENT_DTYPE
from flexdet.data.synthetic import render as kernels
from flexdet.data.synthetic.config import CLASS_NAMES, LabelConfig, SynthConfig
from flexdet.data.synthetic.scene import Scene
from flexdet.data.synthetic.sensor import EventSensor, merge_sorted

SAFETY = 0.8  # aim each sample's largest log change at this fraction of the pixel's threshold


@dataclass
class SyntheticSequence:
    """One simulated sequence; times are µs from the sequence start, class ids index CLASS_NAMES.

    events: EVENT_DTYPE sorted by t. frames: (F, H, W, 3) uint8 RGB at `frame_times`. labels: BOX_DTYPE
    at `label_times` (frame times at the label rate); dense_labels every `dense_period_us`; each with a
    float32 visibility (fraction of the object's in-frame pixels not hidden by nearer objects).
    """

    events: np.ndarray
    frames: np.ndarray
    frame_times: np.ndarray
    label_times: np.ndarray
    labels: np.ndarray
    label_visibility: np.ndarray
    dense_labels: np.ndarray
    dense_visibility: np.ndarray
    width: int
    height: int
    samples: int
    scene: Scene

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the class ids used in `labels` and `dense_labels`."""
        return CLASS_NAMES


def simulate_sequence(config: SynthConfig, seed: int) -> SyntheticSequence:
    """Simulate the scene fixed by (config.scene, seed) through the sensor, camera and labeller."""
    scene = Scene(config.scene, seed)
    events, samples = simulate_events(scene, config, seed)
    frame_times = frame_times_us(config)
    frames = render_frames(scene, config, frame_times, seed)
    step = int(round(config.frames.rate_hz / config.labels.rate_hz))
    label_times = frame_times[::step]
    labels, label_visibility = ground_truth(scene, label_times, config.labels)
    dense_times = np.arange(0, duration_us(config) + 1, config.labels.dense_period_us, dtype=np.int64)
    dense, dense_visibility = ground_truth(scene, dense_times, config.labels)
    return SyntheticSequence(events, frames, frame_times, label_times, labels, label_visibility, dense,
                             dense_visibility, scene.width, scene.height, samples, scene)


def duration_us(config: SynthConfig) -> int:
    """Sequence length in µs."""
    return int(round(config.scene.duration_s * 1e6))


def frame_times_us(config: SynthConfig) -> np.ndarray:
    """Frame timestamps (µs): k / rate for every k with the time inside the sequence."""
    period = 1e6 / config.frames.rate_hz
    count = int(np.floor(duration_us(config) / period + 1e-9)) + 1
    return np.round(np.arange(count) * period).astype(np.int64)


def simulate_events(scene: Scene, config: SynthConfig, seed: int) -> tuple[np.ndarray, int]:
    """Events over the whole sequence and the number of scene samples taken.

    The step adapts so no pixel's log change between samples exceeds its own contrast threshold (at most
    one crossing per pixel per sample) unless the step is already `sensor.dt_min_us`. Only the region
    that changed is redrawn and fed to the pixels; the whole frame when the camera or the gain changed.
    """
    sensor_config = config.sensor
    sensor = EventSensor(scene.width, scene.height, sensor_config, seed)
    buffer = scene.render(0.0)
    sensor.reset(buffer, 0, scene.gain(0.0))
    end = duration_us(config)
    now, step, samples = 0, sensor_config.dt_min_us * 4, 0
    chunks = []
    while now < end:
        step = min(step, end - now)
        while True:
            t_prev, t_s = now * 1e-6, (now + step) * 1e-6
            gain = scene.gain(t_s)
            region = scene.changed_region(t_prev, t_s) if gain == scene.gain(t_prev) else scene.full_region()
            change = sensor.propose(scene.render(t_s, out=buffer, region=region), gain, region)
            samples += 1
            if change <= 1.0 or step <= sensor_config.dt_min_us:
                break
            step = max(sensor_config.dt_min_us, int(step * SAFETY / change))
        chunks.append(sensor.commit(now + step))
        now += step
        growth = min(2.0, SAFETY / max(change, 1e-12))
        step = int(np.clip(step * growth, sensor_config.dt_min_us, sensor_config.dt_max_us))
    signal = np.concatenate(chunks) if chunks else np.zeros(0, EVENT_DTYPE)
    return merge_sorted(signal, sensor.noise(0, end + 1)), samples


def render_frames(scene: Scene, config: SynthConfig, times_us: np.ndarray, seed: int) -> np.ndarray:
    """RGB uint8 frames: the average of sub-frames over an exposure centred on each time, plus read noise."""
    frames_config = config.frames
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4]))
    n_sub = max(1, frames_config.blur_subframes)
    exposure_s = frames_config.exposure_ms * 1e-3
    offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * exposure_s if n_sub > 1 else np.zeros(1)
    frames = np.empty((len(times_us), scene.height, scene.width, 3), np.uint8)
    buffer = np.empty((scene.height, scene.width, 3), np.float32)
    for i, t_us in enumerate(times_us):
        total = np.zeros_like(buffer)
        for offset in offsets:
            t_s = max(0.0, t_us * 1e-6 + offset)
            total += scene.render(t_s, rgb=True, out=buffer) * scene.gain(t_s)
        image = total * (255.0 / n_sub)
        if frames_config.noise_std > 0:
            image += rng.normal(0.0, frames_config.noise_std, image.shape).astype(np.float32)
        frames[i] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return frames


def ground_truth(scene: Scene, times_us: np.ndarray, config: LabelConfig) -> tuple[np.ndarray, np.ndarray]:
    """BOX_DTYPE labels (amodal boxes clipped to the frame) and their visibility at each time.

    An object is labelled when some of it is in the frame, its visible fraction is >= min_visibility
    (and > 0), and its clipped box is at least min_box_px on both sides.
    """
    times_us = np.asarray(times_us, np.int64)
    n = len(scene.objects)
    rows = scene.object_rows_many(times_us * 1e-6)
    boxes = scene.boxes_from_rows(rows)
    own, visible = kernels.coverage_many_kernel(scene.atlas_luma, np.ascontiguousarray(rows), scene.width,
                                                scene.height, 1)
    visibility = np.where(own > 0, visible / np.maximum(own, 1), 0.0)
    x0, x1 = np.clip(boxes[..., 0], 0, scene.width), np.clip(boxes[..., 2], 0, scene.width)
    y0, y1 = np.clip(boxes[..., 1], 0, scene.height), np.clip(boxes[..., 3], 0, scene.height)
    keep = ((visible > 0) & (visibility >= config.min_visibility)
            & (x1 - x0 >= config.min_box_px) & (y1 - y0 >= config.min_box_px))
    out = np.zeros(int(keep.sum()), BOX_DTYPE)
    out["t"] = np.broadcast_to(times_us[:, None], keep.shape)[keep]
    out["x"], out["y"] = x0[keep], y0[keep]
    out["w"], out["h"] = (x1 - x0)[keep], (y1 - y0)[keep]
    out["class_id"] = np.broadcast_to(np.array([CLASS_NAMES.index(o.class_name) for o in scene.objects],
                                               np.uint8).reshape(1, n), keep.shape)[keep]
    out["class_confidence"] = 1.0
    out["track_id"] = np.broadcast_to(np.array([o.track_id for o in scene.objects], np.uint32).reshape(1, n),
                                      keep.shape)[keep]
    return out, visibility[keep].astype(np.float32)
