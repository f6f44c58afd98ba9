"""Fuzzing the readers: random bytes and mutated real files in every format must either read to valid
events (inside the sensor, sorted) or raise a FlexdetError, quickly; never crash or hang."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readers_helpers import REAL, random_events

from flexdet.data import open_recording
from flexdet.data.readers.evt_encode import write_raw
from flexdet.data.writers import write_dsec_h5, write_npz
from flexdet.errors import FlexdetError

SUFFIXES = [".dat", ".raw", ".h5", ".npz", ".aedat4", ".bin"]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TIME_LIMIT_S = 10.0


def _seed_files() -> dict[str, bytes]:
    """Small valid files of every format: real recordings (first bytes) plus written ones."""
    seeds = {}
    for name in ("evt2_gen3_640x480.raw", "evt3_gen41_1280x720_pedestrians.raw", "ncars_obj_004397_td.dat",
                 "dvxplorer_320x240.aedat4"):
        path = REAL / name
        if path.is_file():
            seeds[name] = path.read_bytes()[:60_000]
    with tempfile.TemporaryDirectory() as folder:
        events = random_events(300, 64, 48, 20_000, seed=9)
        write_raw(Path(folder) / "w3.raw", events, 64, 48, evt="3.0")
        write_raw(Path(folder) / "w2.raw", events, 64, 48, evt="2.0")
        write_dsec_h5(Path(folder) / "events.h5", events, width=64, height=48, compression="none")
        write_npz(Path(folder) / "w.npz", events, 64, 48)
        for path in Path(folder).iterdir():
            seeds[path.name] = path.read_bytes()
    return seeds


SEEDS = _seed_files()


def check_reads_safely(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        start = time.monotonic()
        try:
            with open_recording(path, chunk_bytes=512, index_step_us=2_000, cache_index=False) \
                    if suffix in (".dat", ".raw") else open_recording(path) as rec:
                events = rec.read()
                window = rec.read(rec.t_start + 1_000, rec.t_start + 4_000)
                if rec.sensor_size_known:
                    for part in (events, window):
                        assert np.all(part["x"] < rec.width) and np.all(part["y"] < rec.height)
                assert np.all(np.diff(events["t"]) >= 0)
                assert np.all(events["p"] <= 1)
                assert len(events) == rec.num_events
        except FlexdetError:
            pass
        assert time.monotonic() - start < TIME_LIMIT_S


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes(data, suffix):
    check_reads_safely(data, suffix)


@FUZZ
@given(data=st.binary(max_size=512), suffix=st.sampled_from([".dat", ".raw"]),
       header=st.sampled_from([b"% evt 3.0\n% end\n", b"% evt 2.0\n% end\n", b"% Width 10\n% Height 10\n\x00\x08",
                               b"% format EVT3;height=4;width=4\n", b"%\n", b"% evt 3.0\n"]))
def test_random_bodies_behind_valid_headers(data, suffix, header):
    check_reads_safely(header + data, suffix)


@FUZZ
@given(name=st.sampled_from(sorted(SEEDS)), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=8))
def test_mutated_valid_files(name, cut, flips):
    data = bytearray(SEEDS[name])
    for where, mask in flips:
        position = min(int(where * len(data)), len(data) - 1)
        data[position] ^= mask
    data = bytes(data[:max(1, int(cut * len(data)))]) if cut < 0.9 else bytes(data)
    check_reads_safely(data, Path(name).suffix)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_truncation_point_of_a_header(name):
    data = SEEDS[name]
    for cut in range(1, min(len(data), 400), 7):
        check_reads_safely(data[:cut], Path(name).suffix)
