"""Numba kernel decoding Prophesee EVT 2.0 (32-bit words) into EVENT_DTYPE, one chunk at a time.

Hand-written for the same reason as the EVT 3.0 kernel (no installable decoder with a resumable state).
t = (TIME_HIGH << 6) | 6 low bits of the CD word; the 28-bit TIME_HIGH wraps after ~4.8 h and a
backwards jump of more than half its range counts as a wrap. CD events before the first TIME_HIGH are
dropped (unknown time); EXT_TRIGGER (0xA), OTHERS (0xE) and CONTINUED (0xF) are skipped; any other
type stops decoding with STATUS_BAD_WORD. Backward timestamps become the running maximum (counted).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flexdet.data.readers.kernel_status import (
    STATUS_BAD_COORD,
    STATUS_BAD_WORD,
    STATUS_CHECKPOINTS_FULL,
    STATUS_DONE,
    STATUS_OUTPUT_FULL,
)

WORD_DTYPE = np.dtype("<u4")
# State slots: running max, corrections, current TIME_HIGH (-1 = unknown), wrap count.
STATE_SIZE = 4
_HALF_HIGH_RANGE = 1 << 27


def initial_state() -> np.ndarray:
    """Decoder state before the first word of a file."""
    return np.array([-1, 0, -1, 0], dtype=np.int64)


@njit(cache=True, nogil=True, boundscheck=False)
def decode_evt2(words, state, out, n, store, width, height, step, ck_word, ck_state, ck_count, n_ck,
                word_base, extent):
    """Decode `words` from `state` (updated in place); same contract as `evt3.decode_evt3`."""
    run_max = state[0]
    corrections = state[1]
    high = state[2]
    wraps = state[3]
    next_ck = (run_max // step + 1) * step if step > 0 else np.int64(1) << 62
    max_x = extent[0]
    max_y = extent[1]
    cap = len(out)
    status = STATUS_DONE
    i = 0
    nw = len(words)
    while i < nw:
        if run_max >= next_ck:
            if n_ck >= len(ck_word):
                status = STATUS_CHECKPOINTS_FULL
                break
            ck_word[n_ck] = word_base + i
            ck_state[n_ck, 0] = run_max
            ck_state[n_ck, 1] = corrections
            ck_state[n_ck, 2] = high
            ck_state[n_ck, 3] = wraps
            ck_count[n_ck] = n
            n_ck += 1
            next_ck = (run_max // step + 1) * step
        w = np.int64(words[i])
        kind = w >> 28
        if kind <= 0x1:
            if high >= 0:
                x = (w >> 11) & 0x7FF
                y = w & 0x7FF
                if x >= width or y >= height:
                    status = STATUS_BAD_COORD
                    break
                t = (wraps << 34) | (high << 6) | ((w >> 22) & 0x3F)
                if t < run_max:
                    t = run_max
                    corrections += 1
                else:
                    run_max = t
                if store:
                    if n >= cap:
                        status = STATUS_OUTPUT_FULL
                        break
                    out[n].t = t
                    out[n].x = x
                    out[n].y = y
                    out[n].p = kind
                max_x = max(max_x, x)
                max_y = max(max_y, y)
                n += 1
        elif kind == 0x8:
            new_high = w & 0xFFFFFFF
            if high >= 0 and high - new_high > _HALF_HIGH_RANGE:
                wraps += 1
            high = new_high
        elif kind == 0xA or kind == 0xE or kind == 0xF:
            pass
        else:
            status = STATUS_BAD_WORD
            break
        i += 1
    extent[0] = max_x
    extent[1] = max_y
    state[0] = run_max
    state[1] = corrections
    state[2] = high
    state[3] = wraps
    return status, i, n, n_ck
