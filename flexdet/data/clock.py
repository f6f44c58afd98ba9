"""The step clock: when detection step k of a stream ends, at any rate, exactly.

Step k (k = 1, 2, ...) ends at t0 + round(k * stride) µs, halves up, where the stride is the exact rational
1e6 / rate (the rate read from its decimal text, so 25.7 Hz is 257/10 Hz) or a whole number of µs. Integer
arithmetic throughout: 180 Hz steps of 5555.5... µs never drift, and 20 Hz steps land on t0 + k * 50 ms.
Every stream in flexdet (training clips, evaluation, pseudo labels, the runtime benchmark, the live demo)
takes its step times from here.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from flexdet.errors import ConfigError

Rate = int | float | str | Fraction


def exact_rate(rate_hz: Rate) -> Fraction:
    """The rate as an exact fraction; floats are read from their shortest decimal text (25.7 -> 257/10)."""
    try:
        if isinstance(rate_hz, bool):
            raise TypeError
        if isinstance(rate_hz, (int, str, Fraction)):
            rate = Fraction(rate_hz)
        else:
            rate = Fraction(repr(float(rate_hz)))
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        raise ConfigError(f"rate must be a number of Hz, got {rate_hz!r}") from None
    if rate <= 0:
        raise ConfigError(f"rate must be positive, got {rate_hz} Hz")
    return rate


def stride_of(rate_hz: Rate | None = None, stride_us: int | None = None) -> Fraction:
    """The exact step stride in µs from a rate or a whole number of µs (exactly one of them)."""
    if (rate_hz is None) == (stride_us is None):
        raise ConfigError("give a rate or a stride (µs), exactly one")
    if rate_hz is not None:
        return Fraction(1_000_000) / exact_rate(rate_hz)
    if isinstance(stride_us, bool) or int(stride_us) != stride_us or int(stride_us) < 1:
        raise ConfigError(f"stride must be a positive whole number of µs, got {stride_us}")
    return Fraction(int(stride_us))


def window_of(rate_hz: Rate) -> int:
    """The window (µs) of a stream at `rate_hz`: one step, the stride rounded half up (50,000 at 20 Hz, 5,556 at
    180 Hz, where the steps alternate 5,556 / 5,555 µs). The one place a rate becomes a window length."""
    return step_end(0, 1, stride_of(rate_hz))


def step_end(t0: int, k: int, stride: Fraction) -> int:
    """End (µs) of step k of a stream starting at t0."""
    return int(t0) + (2 * int(k) * stride.numerator + stride.denominator) // (2 * stride.denominator)


def step_ends(t0: int, t1: int, rate_hz: Rate | None = None, stride_us: int | None = None) -> np.ndarray:
    """End times (int64 µs) of every step ending in (t0, t1]."""
    stride = stride_of(rate_hz, stride_us)
    t0, t1 = int(t0), int(t1)
    if t1 <= t0:
        return np.empty(0, dtype=np.int64)
    num, den = stride.numerator, stride.denominator
    # round(k * num / den) <= D  <=>  k < (2D + 1) den / (2 num): the last step index, exactly.
    count = -(-((2 * (t1 - t0) + 1) * den) // (2 * num)) - 1
    if 2 * (count + 1) * num + den < 2 ** 62:
        k = np.arange(1, count + 1, dtype=np.int64)
        return t0 + (2 * k * num + den) // (2 * den)
    return np.array([step_end(t0, k, stride) for k in range(1, count + 1)], dtype=np.int64)


class StepClock:
    """A running stream's clock: `advance()` takes the next step; `set_rate` re-anchors at the last step's end,
    so a rate change never moves a step already taken."""

    def __init__(self, t0: int, rate_hz: Rate) -> None:
        self.t0 = int(t0)
        self.stride = stride_of(rate_hz)
        self.rate = exact_rate(rate_hz)
        self.k = 0

    def end(self, k: int) -> int:
        """End (µs) of step k >= 1 since the last anchor."""
        return step_end(self.t0, k, self.stride)

    @property
    def next_end(self) -> int:
        return self.end(self.k + 1)

    def advance(self) -> int:
        """Take the next step; returns its end."""
        self.k += 1
        return self.end(self.k)

    def set_rate(self, rate_hz: Rate) -> None:
        self.t0 = self.end(self.k) if self.k else self.t0
        self.rate = exact_rate(rate_hz)
        self.stride = stride_of(rate_hz)
        self.k = 0


def fine_grid(base_times: np.ndarray, factor: int) -> np.ndarray:
    """The base instants with `factor - 1` instants inserted in every interval [a, b): the steps of a stream from a
    with stride (b - a) / factor (`step_end`: a + round(j (b - a) / factor), exact integers, halves up), so
    jittered label times keep their own spacing. FAL's teacher grid."""
    base = np.asarray(base_times, dtype=np.int64)
    if len(base) < 2:
        return base.copy()
    if np.any(np.diff(base) <= 0):
        raise ConfigError("fine_grid: base instants must be strictly increasing")
    if isinstance(factor, bool) or int(factor) != factor or int(factor) < 1:
        raise ConfigError(f"fine_grid: factor must be a positive whole number, got {factor!r}")
    starts, gaps = base[:-1, None], np.diff(base)[:, None]
    j = np.arange(int(factor), dtype=np.int64)[None, :]
    inner = starts + (2 * j * gaps + int(factor)) // (2 * int(factor))  # step_end, vectorised over gaps and j
    return np.append(inner.reshape(-1), base[-1])
