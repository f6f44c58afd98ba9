"""ESIM-style event pixel array: log intensity, per-pixel thresholds with mismatch, refractory period,
events at linearly interpolated crossing times, and background / hot-pixel noise.

The per-pixel loop is a Numba kernel (no library simulates a DVS pixel array on structured arrays):
a counting pass, then an emitting pass into precomputed slots; both can be limited to the region of
the image that changed.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from flexdet.data.events import EVENT_DTYPE, empty_events
from flexdet.data.synthetic.config import SensorConfig
from flexdet.errors import FlexdetError


@njit(cache=True)
def _count_kernel(image, gain, eps, log_prev, reference, c_on, c_off, log_next, row_counts, row_change, region):
    """Log of the new sample into `log_next` inside `region`; per row: crossings to emit and the largest
    log change in units of the pixel's own threshold (> 1 means some pixel may cross twice)."""
    u0, u1, v0, v1 = region[0], region[1], region[2], region[3]
    row_counts[:] = 0
    row_change[:] = 0.0
    for v in range(v0, v1):
        count = 0
        change = 0.0
        for u in range(u0, u1):
            value = math.log(eps + gain * image[v, u])
            log_next[v, u] = value
            step = value - log_prev[v, u]
            change = max(change, step / c_on[v, u] if step >= 0 else -step / c_off[v, u])
            delta = value - reference[v, u]
            if delta >= c_on[v, u]:
                count += int(delta / c_on[v, u])
            elif -delta >= c_off[v, u]:
                count += int(-delta / c_off[v, u])
        row_counts[v] = count
        row_change[v] = change


@njit(cache=True)
def _emit_kernel(log_prev, log_next, reference, c_on, c_off, last_event, refractory, t0, t1, row_start, out,
                 region):
    """Write each crossing's event (t = -1 when the refractory period drops it), advance the state, and
    copy the new log intensity into `log_prev` inside `region`."""
    u0, u1, v0, v1 = region[0], region[1], region[2], region[3]
    span = t1 - t0
    for v in range(v0, v1):
        slot = row_start[v]
        for u in range(u0, u1):
            start = log_prev[v, u]
            end = log_next[v, u]
            level = reference[v, u]
            rising = end >= level
            step = c_on[v, u] if rising else -c_off[v, u]
            n = int((end - level) / step)
            for _ in range(n):
                level += step
                fraction = (level - start) / (end - start) if end != start else 1.0
                fraction = min(max(fraction, 0.0), 1.0)
                t = t0 + int(round(fraction * span))
                if t - last_event[v, u] >= refractory:
                    out[slot, 0] = t
                    last_event[v, u] = t
                else:
                    out[slot, 0] = -1
                out[slot, 1] = u
                out[slot, 2] = v
                out[slot, 3] = 1 if rising else 0
                slot += 1
            reference[v, u] = level
            log_prev[v, u] = end


class EventSensor:
    """A DVS pixel array fed intensity images in [0, 1] at increasing times (µs), emitting EVENT_DTYPE events.

    `reset` adapts the pixels to an image (no events); `propose` computes the log image of a new sample and
    the largest log change since the previous sample (for adaptive stepping); `commit` emits its events.
    """

    def __init__(self, width: int, height: int, config: SensorConfig, seed: int) -> None:
        self.width, self.height, self.config = int(width), int(height), config
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
        shape = (self.height, self.width)
        self.c_on = np.maximum(rng.normal(config.threshold_mean, config.threshold_std, shape),
                               config.threshold_min).astype(np.float64)
        self.c_off = np.maximum(rng.normal(config.threshold_mean, config.threshold_std, shape),
                                config.threshold_min).astype(np.float64)
        n_hot = int(round(config.hot_pixel_fraction * self.width * self.height))
        self.hot_pixels = rng.choice(self.width * self.height, size=n_hot, replace=False)
        self.noise_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
        self.reference = np.zeros(shape)
        self.log_prev = np.zeros(shape)
        self.log_next = np.zeros(shape)
        self.last_event = np.full(shape, np.iinfo(np.int64).min // 2, np.int64)
        self.row_counts = np.zeros(self.height, np.int64)
        self.row_change = np.zeros(self.height)
        self.time_us: int | None = None
        self.full = np.array([0, self.width, 0, self.height], np.int64)
        self.region = self.full

    def _check(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.shape != (self.height, self.width):
            raise FlexdetError(f"event sensor: image of shape {image.shape} does not match the sensor "
                               f"{self.width}x{self.height}")
        return np.ascontiguousarray(image, dtype=np.float32)

    def reset(self, image: np.ndarray, time_us: int, gain: float = 1.0) -> None:
        """Adapt every pixel to `image` at `time_us`: the reference level becomes the current log intensity."""
        image = self._check(image)
        _count_kernel(image, gain, self.config.log_eps, self.log_prev, self.reference, self.c_on, self.c_off,
                      self.log_next, self.row_counts, self.row_change, self.full)
        self.log_prev[:] = self.log_next
        self.reference[:] = self.log_next
        self.last_event[:] = np.iinfo(np.int64).min // 2
        self.time_us = int(time_us)

    def propose(self, image: np.ndarray, gain: float = 1.0, region: np.ndarray | None = None) -> float:
        """Take a candidate sample (only `region` (u0, u1, v0, v1) changed, if given); return the largest
        log change since the last committed sample, in units of each pixel's threshold."""
        if self.time_us is None:
            raise FlexdetError("event sensor: call reset() with a first image before feeding samples")
        self.region = self.full if region is None else np.asarray(region, np.int64)
        _count_kernel(self._check(image), gain, self.config.log_eps, self.log_prev, self.reference, self.c_on,
                      self.c_off, self.log_next, self.row_counts, self.row_change, self.region)
        return float(self.row_change.max()) if self.height else 0.0

    def commit(self, time_us: int) -> np.ndarray:
        """Emit the events between the last sample and the proposed one, taken at `time_us`; time-sorted."""
        time_us = int(time_us)
        if self.time_us is None or time_us < self.time_us:
            raise FlexdetError(f"event sensor: sample time {time_us} µs is before the previous one ({self.time_us} µs)")
        row_start = np.zeros(self.height, np.int64)
        np.cumsum(self.row_counts[:-1], out=row_start[1:])
        raw = np.empty((int(self.row_counts.sum()), 4), np.int64)
        _emit_kernel(self.log_prev, self.log_next, self.reference, self.c_on, self.c_off, self.last_event,
                     self.config.refractory_us, self.time_us, time_us, row_start, raw, self.region)
        self.time_us = time_us
        raw = raw[raw[:, 0] >= 0]
        raw = raw[np.argsort(raw[:, 0], kind="stable")]
        events = empty_events(len(raw))
        for i, name in enumerate(EVENT_DTYPE.names):
            events[name] = raw[:, i]
        return events

    def step(self, image: np.ndarray, time_us: int, gain: float = 1.0, noise: bool = True) -> np.ndarray:
        """propose + commit in one call (fixed step), with this interval's noise events merged in."""
        start = self.time_us
        self.propose(image, gain)
        events = self.commit(time_us)
        if noise:
            events = merge_sorted(events, self.noise(start, time_us))
        return events

    def noise(self, t0_us: int, t1_us: int) -> np.ndarray:
        """Background activity (Poisson, rate per pixel) and hot pixels over [t0, t1), random polarity."""
        config, rng = self.config, self.noise_rng
        duration_s = max(0, t1_us - t0_us) * 1e-6
        n_background = rng.poisson(config.noise_rate_hz * self.width * self.height * duration_s)
        pixels = rng.integers(0, self.width * self.height, n_background)
        if len(self.hot_pixels):
            hot_counts = rng.poisson(config.hot_pixel_rate_hz * duration_s, len(self.hot_pixels))
            pixels = np.concatenate([pixels, np.repeat(self.hot_pixels, hot_counts)])
        events = empty_events(len(pixels))
        events["t"] = rng.integers(t0_us, max(t0_us + 1, t1_us), len(pixels))
        events["x"] = pixels % self.width
        events["y"] = pixels // self.width
        events["p"] = rng.integers(0, 2, len(pixels))
        return events[np.argsort(events["t"], kind="stable")]


def merge_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two time-sorted event arrays into one (stable: ties keep `a` first)."""
    if not len(b):
        return a
    if not len(a):
        return b
    merged = np.concatenate([a, b])
    return merged[np.argsort(merged["t"], kind="stable")]
