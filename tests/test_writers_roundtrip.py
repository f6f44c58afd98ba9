"""Writers -> readers round trips: every writer's file reads back to the same events and boxes."""

from __future__ import annotations

import numpy as np
import pytest
from readers_helpers import assert_same_events, random_events

from flexdet.data import open_recording, read_boxes, read_events
from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.readers.evt_encode import write_raw
from flexdet.data.writers import dsec_ms_to_idx, write_boxes, write_dat, write_dsec_h5, write_npz


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("writer", ["dat", "dsec", "npz", "evt2", "evt3", "evt3_plain"])
def test_events_round_trip(tmp_path, writer):
    events = random_events(30_000, 640, 480, 300_000, seed=11)
    events[100:400]["y"] = 17  # a run of one row so EVT 3.0 vectors are exercised
    events[100:400]["t"] = events["t"][100]
    events[100:400]["x"] = np.arange(300)
    events = events[np.lexsort((events["x"], events["y"], events["t"]))]
    path = {"dat": tmp_path / "r_td.dat", "dsec": tmp_path / "events.h5", "npz": tmp_path / "r.npz"}.get(
        writer, tmp_path / f"{writer}.raw")
    if writer == "dat":
        write_dat(path, events, 640, 480)
    elif writer == "dsec":
        write_dsec_h5(path, events, width=640, height=480)
    elif writer == "npz":
        write_npz(path, events, 640, 480)
    else:
        write_raw(path, events, 640, 480, evt="2.0" if writer == "evt2" else "3.0",
                  vectorize=writer != "evt3_plain")
    with open_recording(path, chunk_bytes=1000, index_step_us=3_000) as rec:
        assert (rec.width, rec.height, rec.num_events) == (640, 480, len(events))
        assert (rec.t_start, rec.t_end) == (int(events["t"][0]), int(events["t"][-1]) + 1)
        assert_same_events(rec.read(), events)
        t0, t1 = 123_456, 178_901
        keep = (events["t"] >= t0) & (events["t"] < t1)
        assert_same_events(rec.read(t0, t1), events[keep])


def test_evt3_vectors_shrink_the_file(tmp_path):
    events = random_events(1, 640, 480, 10)
    row = np.repeat(events, 600)
    row["x"] = np.arange(600)
    write_raw(tmp_path / "v.raw", row, 640, 480, vectorize=True)
    write_raw(tmp_path / "p.raw", row, 640, 480, vectorize=False)
    assert (tmp_path / "v.raw").stat().st_size < (tmp_path / "p.raw").stat().st_size / 4
    assert_same_events(read_events(tmp_path / "v.raw"), row)


def test_dsec_ms_to_idx_is_exact(tmp_path):
    import h5py
    import hdf5plugin  # noqa: F401

    events = random_events(10_000, 640, 480, 40_000, seed=12, t0=5_000_000)
    write_dsec_h5(tmp_path / "events.h5", events, t_offset=4_990_000)
    with h5py.File(tmp_path / "events.h5", "r") as f:
        ms_to_idx = f["ms_to_idx"][()]
        assert int(f["t_offset"][()]) == 4_990_000
    rel = events["t"] - 4_990_000
    for ms, index in enumerate(ms_to_idx):
        brute = next((i for i, t in enumerate(rel) if t >= ms * 1000), len(rel))
        assert index == brute, ms
    np.testing.assert_array_equal(dsec_ms_to_idx(rel), ms_to_idx)
    assert_same_events(read_events(tmp_path / "events.h5"), events)


def test_boxes_round_trip_and_gen1_names(tmp_path):
    boxes = np.zeros(4, dtype=BOX_DTYPE)
    boxes["t"] = [300, 100, 100, 200]
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = [1, 2, 290, 4], [5, 6, 7, 230], [10, 11, 30, 13], [14, 15, 16, 20]
    boxes["class_id"], boxes["class_confidence"], boxes["track_id"] = [0, 1, 0, 1], [0.5, 1, 0.25, 1], [7, 8, 9, 10]
    write_boxes(tmp_path / "tracks.npy", boxes)
    order = np.argsort(boxes["t"], kind="stable")
    np.testing.assert_array_equal(read_boxes(tmp_path / "tracks.npy"), boxes[order])

    gen1 = np.zeros(4, dtype=[("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                              ("class_id", "u1"), ("confidence", "<f4"), ("track_id", "<u4")])
    for field in ("x", "y", "w", "h", "class_id", "track_id"):
        gen1[field] = boxes[field]
    gen1["ts"], gen1["confidence"] = boxes["t"], boxes["class_confidence"]
    np.save(tmp_path / "a_bbox.npy", gen1)
    np.testing.assert_array_equal(read_boxes(tmp_path / "a_bbox.npy"), boxes[order])

    clipped = read_boxes(tmp_path / "a_bbox.npy", 304, 240)
    np.testing.assert_allclose(clipped["w"], [11, 14, 13, 10])   # t order: 100 (x2), 200, 300
    np.testing.assert_allclose(clipped["h"], [15, 16, 10, 14])   # 230 + 20 clipped to 240

    other = np.zeros(2, dtype=[("t", "<i8"), ("x", "<f8"), ("y", "<f8"), ("w", "<f8"), ("h", "<f8"),
                               ("class_id", "<i4"), ("class_confidence", "<f8"), ("track_id", "<i8")])
    other["t"], other["w"], other["h"], other["class_id"] = [5, 1], [3.5, 2], [1, 1], [6, 7]
    np.save(tmp_path / "other.npy", other)
    read = read_boxes(tmp_path / "other.npy")
    assert read.dtype == BOX_DTYPE
    np.testing.assert_array_equal(read["class_id"], [7, 6])
    np.testing.assert_allclose(read["w"], [2, 3.5])


def test_dat_labels_are_found_next_to_the_recording(tmp_path):
    events = random_events(100, 304, 240, 10_000)
    write_dat(tmp_path / "x_td.dat", events, 304, 240)
    boxes = np.zeros(1, dtype=BOX_DTYPE)
    boxes["x"], boxes["w"], boxes["h"] = 300, 10, 5
    write_boxes(tmp_path / "x_bbox.npy", boxes)
    with open_recording(tmp_path / "x_td.dat") as rec:
        assert rec.has_labels
        np.testing.assert_allclose(rec.labels()["w"], [4])
