"""Numba kernel decoding Prophesee EVT 3.0 (16-bit stateful words) into EVENT_DTYPE, one chunk at a time.

Hand-written because no installable library decodes EVT 3.0 into numpy at this speed with a resumable
state (Metavision's SDK is not on PyPI; expelliarmus/evlib are optional). The decoder state lives in a
small int64 array so a chunk boundary, or a checkpoint of the sparse index, can fall on any word.

Policy (shared with every reader): a timestamp that steps backwards is replaced by the running maximum
and counted. Events that arrive before the decoder knows their time (no TIME_HIGH yet), their row (no
ADDR_Y yet) or their vector base (no VECT_BASE_X yet) are dropped: the stream started mid-packet.
EXT_TRIGGER, OTHERS, CONTINUED_4 and CONTINUED_12 words are skipped; word types 0x1, 0x9, 0xB, 0xC, 0xD
are undefined and stop decoding with STATUS_BAD_WORD.
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

WORD_DTYPE = np.dtype("<u2")
# State slots: running max, corrections, current TIME_HIGH (-1 = unknown), wrap count, TIME_LOW, y, base x, pol.
STATE_SIZE = 8
EVT3_TIME_RANGE = 1 << 24
_HALF_HIGH_RANGE = 1 << 11


def initial_state() -> np.ndarray:
    """Decoder state before the first word of a file."""
    return np.array([-1, 0, -1, 0, 0, -1, -1, 0], dtype=np.int64)


@njit(cache=True, nogil=True, boundscheck=False)
def decode_evt3(words, state, out, n, store, width, height, step, ck_word, ck_state, ck_count, n_ck,
                word_base, extent):
    """Decode `words` from the state in `state` (updated in place).

    Writes events into `out[n:]` when `store`; when `step` > 0 records a checkpoint (word offset, state,
    event count) each time the running max passes a multiple of `step` µs. Returns (status, word index
    where it stopped, events so far, checkpoints so far).
    """
    run_max = state[0]
    corrections = state[1]
    high = state[2]
    wraps = state[3]
    low = state[4]
    y = state[5]
    base_x = state[6]
    pol = state[7]
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
            ck_state[n_ck, 4] = low
            ck_state[n_ck, 5] = y
            ck_state[n_ck, 6] = base_x
            ck_state[n_ck, 7] = pol
            ck_count[n_ck] = n
            n_ck += 1
            next_ck = (run_max // step + 1) * step
        w = np.int64(words[i])
        kind = w >> 12
        if kind == 0x2:
            if high >= 0 and y >= 0:
                x = w & 0x7FF
                if x >= width or y >= height:
                    status = STATUS_BAD_COORD
                    break
                t = (wraps << 24) | (high << 12) | low
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
                    out[n].p = (w >> 11) & 1
                max_x = max(max_x, x)
                max_y = max(max_y, y)
                n += 1
        elif kind == 0x0:
            y = w & 0x7FF
        elif kind == 0x6:
            low = w & 0xFFF
        elif kind == 0x8:
            new_high = w & 0xFFF
            if high >= 0 and high - new_high > _HALF_HIGH_RANGE:
                wraps += 1
            high = new_high
        elif kind == 0x4 or kind == 0x5:
            bits = 12 if kind == 0x4 else 8
            if high >= 0 and y >= 0 and base_x >= 0:
                mask = w & ((1 << bits) - 1)
                if mask != 0:
                    t = (wraps << 24) | (high << 12) | low
                    if t < run_max:
                        t = run_max
                        count = 0
                        for b in range(bits):
                            count += (mask >> b) & 1
                        corrections += count
                    else:
                        run_max = t
                    last_x = base_x
                    for b in range(bits):
                        if (mask >> b) & 1:
                            last_x = base_x + b
                    if last_x >= width or y >= height:
                        status = STATUS_BAD_COORD
                        break
                    max_x = max(max_x, last_x)
                    max_y = max(max_y, y)
                    for b in range(bits):
                        if (mask >> b) & 1:
                            if store:
                                if n >= cap:
                                    status = STATUS_OUTPUT_FULL
                                    break
                                out[n].t = t
                                out[n].x = base_x + b
                                out[n].y = y
                                out[n].p = pol
                            n += 1
                    if status != STATUS_DONE:
                        break
                base_x += bits
        elif kind == 0x3:
            base_x = w & 0x7FF
            pol = (w >> 11) & 1
        elif kind == 0x7 or kind == 0xA or kind == 0xE or kind == 0xF:
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
    state[4] = low
    state[5] = y
    state[6] = base_x
    state[7] = pol
    return status, i, n, n_ck
