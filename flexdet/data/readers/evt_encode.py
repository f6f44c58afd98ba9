"""Encoders from EVENT_DTYPE to Prophesee RAW EVT 2.0 / EVT 3.0, the inverse of the decoding kernels.

Needed to write RAW files for tests, benchmarks and synthetic datasets: no installable library writes
EVT 2.0/3.0 (Metavision's SDK is not on PyPI). EVT 3.0 output uses VECT_12 / VECT_8 words where runs of
events share t, y and polarity within 12 (or 8) columns, like a camera does, and ADDR_X otherwise.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from flexdet.atomic import atomic_path
from flexdet.data.events import check_events

_MAX_HIGH_STEP = (1 << 11) - 1


def raw_header(evt: str, width: int, height: int) -> bytes:
    """The '%' header Metavision writes, with the geometry in its `% format` line."""
    name = {"2.0": "EVT2", "3.0": "EVT3"}[evt]
    return (f"% evt {evt}\n% format {name};height={int(height)};width={int(width)}\n"
            f"% geometry {int(width)}x{int(height)}\n% integrator_name flexdet\n% end\n").encode("ascii")


def encode_evt2(events: np.ndarray) -> np.ndarray:
    """EVT 2.0 words (uint32) for time-sorted events: a TIME_HIGH whenever t >> 6 changes, then CD words."""
    t = events["t"].astype(np.int64)
    if len(t) and (t[0] < 0 or np.any(np.diff(t) < 0)):
        raise ValueError("encode_evt2 needs non-negative, time-sorted events")
    high = t >> 6
    new_high = np.ones(len(t), dtype=bool)
    new_high[1:] = high[1:] != high[:-1]
    n_words = len(t) + int(new_high.sum())
    words = np.empty(n_words, dtype=np.uint32)
    cd_pos = np.arange(len(t)) + np.cumsum(new_high)
    words[cd_pos[new_high] - 1] = (np.uint32(0x8) << 28) | (high[new_high] & 0xFFFFFFF).astype(np.uint32)
    words[cd_pos] = ((events["p"].astype(np.uint32) << 28) | ((t & 0x3F).astype(np.uint32) << 22)
                     | (events["x"].astype(np.uint32) << 11) | events["y"].astype(np.uint32))
    return words


@njit(cache=True)
def _encode_evt3(t, x, y, p, vectorize, words):
    n_words = 0
    cur_high = np.int64(-1)
    cur_low = np.int64(-1)
    cur_y = np.int64(-1)
    i = 0
    n = len(t)
    while i < n:
        high_abs = t[i] >> 12
        if high_abs != cur_high:
            if cur_high >= 0:
                while high_abs - cur_high > _MAX_HIGH_STEP:
                    cur_high += _MAX_HIGH_STEP
                    words[n_words] = 0x8000 | (cur_high & 0xFFF)
                    n_words += 1
            cur_high = high_abs
            words[n_words] = 0x8000 | (cur_high & 0xFFF)
            n_words += 1
            cur_low = -1
        low = t[i] & 0xFFF
        if low != cur_low:
            words[n_words] = 0x6000 | low
            n_words += 1
            cur_low = low
        if y[i] != cur_y:
            words[n_words] = y[i]
            n_words += 1
            cur_y = y[i]
        run = 1
        mask = 1
        if vectorize:
            j = i + 1
            while (j < n and t[j] == t[i] and y[j] == y[i] and p[j] == p[i] and x[j] > x[j - 1]
                   and x[j] - x[i] < 12):
                mask |= 1 << (x[j] - x[i])
                j += 1
            run = j - i
        if run >= 2:
            words[n_words] = 0x3000 | (p[i] << 11) | x[i]
            n_words += 1
            if mask < 256:
                words[n_words] = 0x5000 | mask
            else:
                words[n_words] = 0x4000 | mask
            n_words += 1
        else:
            words[n_words] = 0x2000 | (p[i] << 11) | x[i]
            n_words += 1
        i += run
    return n_words


def encode_evt3(events: np.ndarray, vectorize: bool = True) -> np.ndarray:
    """EVT 3.0 words (uint16) for time-sorted events; TIME_HIGH words bridge gaps longer than 8 s."""
    t = events["t"].astype(np.int64)
    if len(t) and (t[0] < 0 or t[0] >= 1 << 24 or np.any(np.diff(t) < 0)):
        raise ValueError("encode_evt3 needs time-sorted events starting in [0, 2**24) µs: EVT 3.0 "
                         "counts clock wraps from the file start, so an earlier epoch cannot be stored")
    extra_high = int(np.sum(np.diff(t >> 12) // _MAX_HIGH_STEP)) if len(t) else 0
    words = np.empty(4 * len(t) + extra_high + 1, dtype=np.uint16)
    n_words = _encode_evt3(t, events["x"].astype(np.int64), events["y"].astype(np.int64),
                           events["p"].astype(np.int64), vectorize, words)
    return words[:n_words]


def write_raw(path: os.PathLike[str] | str, events: np.ndarray, width: int, height: int,
              evt: str = "3.0", vectorize: bool = True) -> None:
    """Write a Prophesee RAW file (EVT 2.0 or 3.0) atomically, with its geometry in the header."""
    check_events(events, width, height, source=os.fspath(path))
    if max(width, height) > 2048:
        raise ValueError(f"{path}: EVT {evt} addresses at most 2048x2048 pixels")
    words = encode_evt2(events) if evt == "2.0" else encode_evt3(events, vectorize)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(raw_header(evt, width, height))
            handle.write(words.tobytes())
