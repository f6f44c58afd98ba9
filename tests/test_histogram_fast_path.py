"""The stacked histogram's counting kernel (eight events per group, a one-event tail) against a plain
reference, bit for bit: random and real events, serial and parallel, every tail length, the clip, the
borders, and the first bad event named wherever it sits in a group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flexdet.data.events import EVENT_DTYPE
from flexdet.data.readers import read_events
from flexdet.data.representations import event_frame, stacked_histogram
from flexdet.errors import FlexdetError

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def reference(events: np.ndarray, height: int, width: int, bins: int, t_start: int, t_end: int,
              clip: int) -> np.ndarray:
    """One Python-level loop over the events in [t_start, t_end): the definition, nothing clever."""
    out = np.zeros((2 * bins, height, width), np.int64)
    for t, x, y, p in zip(events["t"].tolist(), events["x"].tolist(), events["y"].tolist(),
                          events["p"].tolist(), strict=True):
        if t_start <= t < t_end:
            out[p * bins + (t - t_start) * bins // (t_end - t_start), y, x] += 1
    return np.minimum(out, clip).astype(np.uint8)


def random_events(n: int, height: int, width: int, t_end: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = np.zeros(n, EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, t_end, n))
    events["x"] = rng.integers(0, width, n)
    events["y"] = rng.integers(0, height, n)
    events["p"] = rng.integers(0, 2, n)
    return events


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("n", list(range(0, 20)) + [63, 64, 65, 1001])
def test_every_tail_length_matches_reference(n, parallel):
    events = random_events(n, 5, 7, 1000, seed=n)
    got = stacked_histogram(events, 5, 7, bins=3, t_start=0, t_end=1000, clip=2, parallel=parallel)
    np.testing.assert_array_equal(got, reference(events, 5, 7, 3, 0, 1000, 2))


@pytest.mark.parametrize("parallel", [False, True])
def test_random_events_with_heavy_clipping(parallel):
    events = random_events(200_000, 3, 4, 50_000, seed=1)
    for clip in (1, 10, 255):
        got = stacked_histogram(events, 3, 4, bins=10, t_start=0, t_end=50_000, clip=clip, parallel=parallel)
        np.testing.assert_array_equal(got, reference(events, 3, 4, 10, 0, 50_000, clip))
    # 200 k events over 2 x 10 x 12 cells: ~830 per cell, above uint8's 255: saturates, never wraps
    assert stacked_histogram(events, 3, 4, 10, 0, 50_000, clip=255, parallel=parallel).min() == 255


@pytest.mark.parametrize("parallel", [False, True])
def test_real_evt3_events_match_reference(parallel):
    events = read_events(REAL / "evt3_gen41_1280x720_pedestrians.raw")
    t0 = int(events["t"][0])
    t1 = int(events["t"][-1]) + 1
    got = stacked_histogram(events, 720, 1280, 10, t0, t1, clip=10, parallel=parallel)
    np.testing.assert_array_equal(got, reference(events, 720, 1280, 10, t0, t1, 10))
    assert got.sum() == len(events)  # a sparse recording: no pixel reaches the clip in a bin
    # the same events tiled 40x into the same window: the counts pile up and saturate
    tiled = np.sort(np.tile(events, 40), order="t", kind="stable")
    got = stacked_histogram(tiled, 720, 1280, 10, t0, t1, clip=10, parallel=parallel)
    np.testing.assert_array_equal(got, reference(tiled, 720, 1280, 10, t0, t1, 10))
    assert got.max() == 10


def test_empty_window_single_event_and_borders():
    empty = np.zeros(0, EVENT_DTYPE)
    assert not stacked_histogram(empty, 4, 5, 2, 0, 10).any()
    one = np.array([(3, 4, 3, 1)], EVENT_DTYPE)
    hist = stacked_histogram(one, 4, 5, 2, 0, 10)
    assert hist.sum() == 1 and hist[2 + 0, 3, 4] == 1
    # nine events on the four corners and at the first / last microsecond of the window
    corners = np.array([(0, 0, 0, 0), (0, 4, 0, 1), (1, 0, 3, 0), (5, 4, 3, 1), (9, 4, 3, 1), (9, 4, 3, 1),
                        (9, 0, 0, 0), (9, 0, 0, 0), (10, 1, 1, 1)], EVENT_DTYPE)
    for parallel in (False, True):
        got = stacked_histogram(corners, 4, 5, 2, 0, 10, clip=2, parallel=parallel)
        np.testing.assert_array_equal(got, reference(corners, 4, 5, 2, 0, 10, 2))
        assert got[1, 0, 0] == 2 and got[3, 3, 4] == 2 and got[2, 3, 4] == 0 and got.sum() == 7
    frame = event_frame(corners, 4, 5, 0, 10, clip=1)
    assert frame[0, 0, 0] == 1 and frame[1, 3, 4] == 1


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("position", [0, 1, 7, 8, 9, 15, 16, 21])
@pytest.mark.parametrize("field, value, words", [("x", 5, "x=5 outside"), ("y", 4, "y=4 outside"),
                                                  ("p", 2, "polarity 2"), ("t", -1, "earlier than")])
def test_first_bad_event_is_named_wherever_it_sits_in_a_group(position, field, value, words, parallel):
    events = random_events(24, 4, 5, 100, seed=position)
    events["t"] = np.arange(24) * 4
    if field == "t":
        events["t"][position] = events["t"][position - 1] - 1 if position else -1
        if position == 0:  # the first event has no predecessor: make the second one go back instead
            events["t"][0] = 0
            events["t"][1] = -1
            position = 1
    else:
        events[field][position] = value
    # a second bad event later in the same or the next group must not be the one reported
    events["x"][min(position + 2, 23)] = 9
    with pytest.raises(FlexdetError, match=f"event {position} has .*{words}"):
        stacked_histogram(events, 4, 5, 2, -10, 200, parallel=parallel)
