"""Shared helpers of the reader tests: where the real recordings are, and random event streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flexdet.data.events import EVENT_DTYPE

REAL = Path(__file__).parents[1] / ".." / "shared" / "data" / "real"
REAL_WITH_REFERENCE = ["evt2_gen3_640x480.raw", "evt3_gen41_1280x720_pedestrians.raw", "ncars_obj_004397_td.dat"]


def real_file(name: str) -> Path:
    """Path of a real recording, skipping the test when the shared data folder is absent."""
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"real recording {path} is absent (needs the shared data folder next to the repo)")
    return path


def reference(name: str) -> dict:
    """The independent reference decode of a real recording (t, x, y, p arrays)."""
    stem = name.rsplit(".", 1)[0]
    with np.load(real_file(f"{stem}.reference.npz")) as data:
        return {k: data[k] for k in "txyp"}


def random_events(n: int, width: int, height: int, duration_us: int, seed: int = 0, t0: int = 0) -> np.ndarray:
    """Time-sorted random events, several per microsecond, grouped by row like a sensor readout."""
    rng = np.random.default_rng(seed)
    events = np.empty(n, dtype=EVENT_DTYPE)
    events["t"] = t0 + np.sort(rng.integers(0, duration_us, n))
    events["x"] = rng.integers(0, width, n)
    events["y"] = rng.integers(0, height, n)
    events["p"] = rng.integers(0, 2, n)
    return events[np.lexsort((events["x"], events["y"], events["t"]))]


def assert_same_events(events: np.ndarray, expected) -> None:
    """Field-by-field exact equality with a dict or structured array of t, x, y, p."""
    assert len(events) == len(expected["t"])
    for field in "txyp":
        np.testing.assert_array_equal(events[field], expected[field], err_msg=f"field {field}")

