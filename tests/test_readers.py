"""Readers: real recordings against independent reference decodes, hand-built word streams, windows,
the sparse index cache, sensor-size rules, DSEC / RVT / AEDAT4 / npz / h5 containers, and errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from readers_helpers import REAL_WITH_REFERENCE, assert_same_events, random_events, real_file, reference

from flexdet.data import open_recording, read_events
from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.readers.evt_encode import raw_header
from flexdet.data.readers.index import INDEX_SUFFIX
from flexdet.data.writers import write_boxes, write_dat, write_dsec_h5, write_npz
from flexdet.errors import FlexdetError, FormatError, SensorSizeError, UnsupportedFormatError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Index caches of read-only files go to a per-test folder, not the user's home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def stitched(recording, window_us: int) -> np.ndarray:
    edges = list(range(recording.t_start, recording.t_end, window_us)) + [recording.t_end]
    return np.concatenate([recording.read(a, b) for a, b in zip(edges[:-1], edges[1:])])


# ---------------------------------------------------------------- real recordings
@pytest.mark.parametrize("name", REAL_WITH_REFERENCE)
def test_real_file_matches_reference(name):
    assert_same_events(read_events(real_file(name)), reference(name))


@pytest.mark.parametrize("name", REAL_WITH_REFERENCE)
@pytest.mark.parametrize("chunk_bytes,step_us", [(64, 700), (4096, 2_000), (16 << 20, 5_000)])
@pytest.mark.parametrize("window_us", [997, 5_000, 33_333])
def test_real_file_windows_stitch_to_reference(name, chunk_bytes, step_us, window_us):
    with open_recording(real_file(name), chunk_bytes=chunk_bytes, index_step_us=step_us) as recording:
        assert_same_events(stitched(recording, window_us), reference(name))


@pytest.mark.parametrize("name", REAL_WITH_REFERENCE)
def test_real_file_window_equals_numpy_selection(name):
    ref = reference(name)
    t0 = int(ref["t"][len(ref["t"]) // 3])
    t1 = t0 + 7_000
    keep = (ref["t"] >= t0) & (ref["t"] < t1)
    events = read_events(real_file(name), t0, t1, chunk_bytes=256, index_step_us=1_000)
    assert_same_events(events, {k: v[keep] for k, v in ref.items()})


def test_real_sizes_follow_the_stated_rule():
    with open_recording(real_file("evt3_gen41_1280x720_pedestrians.raw")) as rec:
        assert (rec.width, rec.height, rec.format) == (1280, 720, "evt3")
        assert "gen41" in rec.size_source
    with open_recording(real_file("evt2_gen3_640x480.raw")) as rec:
        assert (rec.width, rec.height, rec.format) == (640, 480, "evt2")
    with open_recording(real_file("ncars_obj_004397_td.dat")) as rec:
        assert not rec.sensor_size_known
        with pytest.raises(SensorSizeError):
            rec.width  # noqa: B018 (the property raises)
        assert rec.coordinate_extent == (54, 61)
    with open_recording(real_file("ncars_obj_004397_td.dat"), width=120, height=100) as rec:
        assert (rec.width, rec.height, rec.size_source) == (120, 100, "override")
    with open_recording(real_file("evt2_gen3_640x480.raw"), width=1280, height=720) as rec:
        assert (rec.width, rec.height) == (1280, 720)


def test_override_smaller_than_the_events_is_an_error():
    with pytest.raises(FormatError, match="outside the sensor"):
        open_recording(real_file("evt2_gen3_640x480.raw"), width=320, height=240)


def test_real_index_goes_to_user_cache_not_the_read_only_folder(tmp_path):
    path = real_file("ncars_obj_004397_td.dat")
    open_recording(path).close()
    assert not path.with_name(path.name + INDEX_SUFFIX).exists()
    assert list((tmp_path / "cache" / "flexdet" / "index").glob("*" + INDEX_SUFFIX))


def test_aedat4_real_file():
    path = real_file("dvxplorer_320x240.aedat4")
    with open_recording(path) as rec:
        assert (rec.format, rec.width, rec.height, rec.num_events) == ("aedat4", 320, 240, 111_954)
        events = rec.read()
        assert not rec.has_frames
        assert_same_events(stitched(rec, 10_000), events)
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["x"].max() < 320 and events["y"].max() < 240
    assert events["t"][0] == rec.t_start and events["t"][-1] == rec.t_end - 1


# ---------------------------------------------------------------- hand-built word streams
def raw_file(path, evt, words, dtype, width=1280, height=720):
    path.write_bytes(raw_header(evt, width, height) + np.asarray(words, dtype=dtype).tobytes())
    return path


def test_evt3_hand_built_vectors_wraps_and_skipped_words(tmp_path):
    words = [0x8001, 0x6005, 0x0007,                 # t = (1 << 12) | 5, y = 7
             0x3800 | 100, 0x4000 | 0b100000000101,  # base 100, pol 1: x = 100, 102, 111; base -> 112
             0x5000 | 0b10000001,                    # x = 112, 119; base -> 120
             0x2000 | 3,                             # ADDR_X pol 0, x = 3
             0xA123, 0xE000, 0x7000, 0xF000,         # EXT_TRIGGER, OTHERS, CONTINUED: skipped
             0x8FFF, 0x6FFF, 0x2800 | 9,             # t = 0xFFFFFF (no wrap: 1 -> 0xFFF goes forward)
             0x8000, 0x6001, 0x2000 | 10,            # TIME_HIGH 0xFFF -> 0: wrap, t = 2**24 + 1
             0x8001, 0x6000, 0x2000 | 11,            # t = 2**24 + 4096
             0x8000, 0x6002, 0x2000 | 12]            # one step back is no wrap: running max applies
    path = raw_file(tmp_path / "hand.raw", "3.0", words, "<u2")
    t_a, t_b, t_c, t_d = (1 << 12) | 5, 0xFFFFFF, (1 << 24) + 1, (1 << 24) + 4096
    expected = {"t": [t_a] * 6 + [t_b, t_c, t_d, t_d], "x": [100, 102, 111, 112, 119, 3, 9, 10, 11, 12],
                "y": [7] * 10, "p": [1, 1, 1, 1, 1, 0, 1, 0, 0, 0]}
    with open_recording(path) as rec:
        assert_same_events(rec.read(), expected)
        assert rec.time_corrections == 1
        assert_same_events(rec.read(t_c, t_d + 1), {k: v[7:] for k, v in expected.items()})


def test_evt3_events_before_time_and_row_are_dropped(tmp_path):
    words = [0x2000 | 5, 0x8002, 0x2000 | 6, 0x0003, 0x6004, 0x2000 | 7]
    expected = {"t": [(2 << 12) | 4], "x": [7], "y": [3], "p": [0]}
    assert_same_events(read_events(raw_file(tmp_path / "a.raw", "3.0", words, "<u2")), expected)


def test_evt3_unknown_word_type_names_its_offset(tmp_path):
    path = raw_file(tmp_path / "bad.raw", "3.0", [0x8001, 0x0001, 0x2001, 0x9000], "<u2")
    with pytest.raises(FormatError, match=r"at byte offset (\d+)") as info:
        open_recording(path)
    assert info.value.offset == len(raw_header("3.0", 1280, 720)) + 3 * 2


def test_evt2_hand_built(tmp_path):
    cd = lambda kind, low, x, y: (kind << 28) | (low << 22) | (x << 11) | y  # noqa: E731
    words = [cd(1, 3, 1, 1),                    # before any TIME_HIGH: dropped
             (0x8 << 28) | 5, cd(1, 7, 10, 20), cd(0, 63, 639, 479),
             (0xA << 28) | 1, (0xE << 28), (0xF << 28),
             (0x8 << 28) | 4, cd(0, 0, 2, 3)]      # goes backwards: running max
    path = raw_file(tmp_path / "hand2.raw", "2.0", words, "<u4", 640, 480)
    expected = {"t": [(5 << 6) | 7, (5 << 6) | 63, (5 << 6) | 63], "x": [10, 639, 2], "y": [20, 479, 3],
                "p": [1, 0, 0]}
    with open_recording(path) as rec:
        assert_same_events(rec.read(), expected)
        assert rec.time_corrections == 1
    bad = raw_file(tmp_path / "bad2.raw", "2.0", [(0x8 << 28) | 5, (0x3 << 28)], "<u4", 640, 480)
    with pytest.raises(FormatError, match="unknown evt2 word type 0x3"):
        open_recording(bad)
    outside = raw_file(tmp_path / "out2.raw", "2.0", [(0x8 << 28) | 5, cd(1, 0, 640, 0)], "<u4", 640, 480)
    with pytest.raises(FormatError, match="outside the sensor"):
        open_recording(outside)


def test_dat_backward_steps_become_running_max_in_every_read(tmp_path):
    raw_t = np.array([10, 20, 15, 30, 25, 25, 40, 5, 50], dtype=np.uint32)
    data = np.arange(9, dtype=np.uint32) | (np.uint32(3) << 14) | (np.uint32(1) << 28)
    path = tmp_path / "back_td.dat"
    path.write_bytes(b"% Height 240\n% Width 304\n" + bytes([0, 8])
                     + np.rec.fromarrays([raw_t, data], dtype=[("t", "<u4"), ("d", "<u4")]).tobytes())
    expected_t = np.maximum.accumulate(raw_t.astype(np.int64))
    with open_recording(path, chunk_bytes=16, index_step_us=10) as rec:
        assert rec.time_corrections == 4
        np.testing.assert_array_equal(rec.read()["t"], expected_t)
        np.testing.assert_array_equal(stitched(rec, 7)["t"], expected_t)
        np.testing.assert_array_equal(rec.read(25, 41)["x"], [3, 4, 5, 6, 7])


def test_dat_without_header_is_read_as_cd_records(tmp_path):
    events = random_events(100, 304, 240, 5_000, seed=3)
    write_dat(tmp_path / "h_td.dat", events, 304, 240)
    body = (tmp_path / "h_td.dat").read_bytes().split(b"% end\n", 1)[1][2:]
    (tmp_path / "old_td.dat").write_bytes(body)
    (tmp_path / "old_td.bin").write_bytes(body)
    with pytest.raises(UnsupportedFormatError):  # without a header only the .dat suffix says what it is
        open_recording(tmp_path / "old_td.bin")
    with open_recording(tmp_path / "old_td.dat", width=304, height=240) as rec:
        assert_same_events(rec.read(), events)


# ---------------------------------------------------------------- index cache
def test_index_is_cached_in_the_user_cache_and_rebuilt_when_the_file_changes(tmp_path):
    path = tmp_path / "a_td.dat"
    first = random_events(2_000, 304, 240, 100_000, seed=1)
    write_dat(path, first, 304, 240)
    open_recording(path).close()
    assert not path.with_name(path.name + INDEX_SUFFIX).exists()  # never written into the dataset's folder
    (index_file,) = (tmp_path / "cache" / "flexdet" / "index").glob("*" + INDEX_SUFFIX)
    cached_mtime = index_file.stat().st_mtime_ns
    with open_recording(path) as rec:
        assert_same_events(rec.read(), first)
    assert index_file.stat().st_mtime_ns == cached_mtime
    second = random_events(3_000, 304, 240, 200_000, seed=2)
    write_dat(path, second, 304, 240)
    with open_recording(path) as rec:
        assert rec.num_events == 3_000
        assert_same_events(stitched(rec, 9_000), second)


def test_index_falls_back_to_user_cache_for_read_only_folders(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "b_td.dat"
    write_dat(path, random_events(500, 304, 240, 50_000), 304, 240)
    folder.chmod(0o555)
    try:
        open_recording(path).close()
        assert not (folder / (path.name + INDEX_SUFFIX)).exists()
        assert len(list((tmp_path / "cache" / "flexdet" / "index").iterdir())) == 1
    finally:
        folder.chmod(0o755)


def test_corrupt_index_is_ignored(tmp_path):
    path = tmp_path / "c_td.dat"
    events = random_events(800, 304, 240, 50_000)
    write_dat(path, events, 304, 240)
    path.with_name(path.name + INDEX_SUFFIX).write_bytes(b"garbage")
    assert_same_events(read_events(path), events)


# ---------------------------------------------------------------- DSEC, RVT, npz, h5
def make_dsec_sequence(root, events, n_images=3):
    seq = root / "zurich_city_99_a"
    events = events.copy()
    events["t"] += 1_000_000_000
    write_dsec_h5(seq / "events" / "left" / "events.h5", events, t_offset=1_000_000_000, width=640, height=480)
    image_dir = seq / "images" / "left" / "distorted"
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n_images)]
    for i, image in enumerate(images):
        cv2.imwrite(str(image_dir / f"{i:06d}.png"), image)
    stamps = 1_000_000_000 + np.arange(n_images) * 50_000
    (seq / "images" / "timestamps.txt").write_text("\n".join(map(str, stamps)) + "\n")
    boxes = np.zeros(2, dtype=BOX_DTYPE)
    boxes["t"] = stamps[1]
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = [600, 10], [20, 470], [100, 30], [50, 40]
    boxes["class_id"] = [2, 0]
    write_boxes(seq / "object_detections" / "left" / "tracks.npy", boxes)
    return seq, images, stamps


def test_dsec_sequence_events_frames_labels(tmp_path):
    events = random_events(20_000, 640, 480, 150_000, seed=4)
    seq, images, stamps = make_dsec_sequence(tmp_path, events)
    absolute = events.copy()
    absolute["t"] += 1_000_000_000
    for target in (seq, seq / "events" / "left" / "events.h5"):
        with open_recording(target) as rec:
            assert (rec.format, rec.width, rec.height) == ("dsec", 640, 480)
            assert_same_events(rec.read(), absolute)
            assert_same_events(stitched(rec, 3_217), absolute)
            t0, t1 = 1_000_012_345, 1_000_077_777
            keep = (absolute["t"] >= t0) & (absolute["t"] < t1)
            assert_same_events(rec.read(t0, t1), absolute[keep])
            assert rec.has_frames and rec.has_labels
            frames = list(rec.frames())
            assert [t for t, _ in frames] == list(stamps)
            for (_, rgb), bgr in zip(frames, images):
                np.testing.assert_array_equal(rgb, bgr[..., ::-1])
            labels = rec.labels()
            np.testing.assert_allclose(labels["w"], [40, 30])  # 600 + 100 clipped to 640
            np.testing.assert_allclose(labels["h"], [50, 10])  # 470 + 40 clipped to 480


def test_rvt_sequence(tmp_path):
    import h5py
    import hdf5plugin

    seq = tmp_path / "gen1" / "train" / "17-04-04_11-00-13_cut_15_183500000_243500000"
    rep = seq / "event_representations_v2" / "stacked_histogram_dt=50_nbins=10"
    rep.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 10, (4, 20, 240, 304), dtype=np.uint8)
    with h5py.File(rep / "event_representations.h5", "w") as f:
        f.create_dataset("data", data=data, chunks=(1, 20, 240, 304), **hdf5plugin.Blosc(cname="zstd"))
    ends = np.array([50_000, 100_000, 150_000, 200_000], dtype=np.int64)
    np.save(rep / "timestamps_us.npy", ends)
    np.save(rep / "objframe_idx_2_repr_idx.npy", np.array([1, 3]))
    (seq / "labels_v2").mkdir()
    labels = np.zeros(3, dtype=[("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                                ("class_id", "u1"), ("class_confidence", "<f4"), ("track_id", "<u4")])
    labels["t"] = [100_000, 100_000, 200_000]
    labels["x"], labels["w"], labels["h"] = [10, 300, 5], [20, 20, 5], [10, 10, 5]
    np.savez(seq / "labels_v2" / "labels.npz", labels=labels, objframe_idx_2_label_idx=np.array([0, 2]))
    with open_recording(seq) as rec:
        assert (rec.format, rec.width, rec.height, rec.num_events) == ("rvt", 304, 240, None)
        np.testing.assert_array_equal(rec.window_end_times, ends)
        np.testing.assert_array_equal(rec.histograms(1, 3), data[1:3])
        assert (rec.t_start, rec.t_end) == (0, 200_000)
        boxes = rec.labels()
        np.testing.assert_allclose(boxes["w"], [20, 4, 5])  # 300 + 20 clipped to 304
        with pytest.raises(FlexdetError, match="no raw events"):
            rec.read()


def test_npz_and_h5_containers(tmp_path):
    import h5py

    events = random_events(5_000, 346, 260, 80_000, seed=6)
    write_npz(tmp_path / "e.npz", events, 346, 260)
    with h5py.File(tmp_path / "top.h5", "w") as f:
        for k in "txyp":
            f[k] = events[k]
        f.attrs["width"], f.attrs["height"] = 346, 260
    for path, fmt in ((tmp_path / "e.npz", "npz"), (tmp_path / "top.h5", "h5")):
        with open_recording(path) as rec:
            assert (rec.format, rec.width, rec.height) == (fmt, 346, 260)
            assert_same_events(rec.read(), events)
            assert_same_events(stitched(rec, 1_234), events)
    np.savez(tmp_path / "nosize.npz", t=events["t"], x=events["x"], y=events["y"], p=events["p"])
    with open_recording(tmp_path / "nosize.npz") as rec:
        assert not rec.sensor_size_known
    first_bad = int(np.flatnonzero(events["x"] >= 300)[0])
    with pytest.raises(FormatError, match=f"x={events['x'][first_bad]} outside the sensor.*index {first_bad}$"):
        open_recording(tmp_path / "nosize.npz", width=300, height=260)


# ---------------------------------------------------------------- errors
def test_bad_inputs_raise_flexdet_errors_naming_the_file(tmp_path):
    (tmp_path / "empty.raw").write_bytes(b"")
    (tmp_path / "trunc_td.dat").write_bytes(b"% Width 10\n% Height 10\n" + bytes([0, 8]) + b"\0" * 20)
    (tmp_path / "type_td.dat").write_bytes(b"% Width 10\n" + bytes([12, 8]) + b"\0" * 16)
    (tmp_path / "v21.raw").write_bytes(b"% evt 2.1\n% end\n" + b"\0" * 16)
    (tmp_path / "odd.raw").write_bytes(raw_header("3.0", 640, 480) + b"\0" * 5)
    (tmp_path / "x.xyz").write_bytes(b"hello")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "bad.npz").write_bytes(b"not a zip at all")
    (tmp_path / "bad.aedat4").write_bytes(b"#!AER-DAT4.0\r\n" + bytes(range(64)))
    cases = {"missing.dat": (FormatError, "no such file"), "empty.raw": (FormatError, "empty file"),
             "trunc_td.dat": (FormatError, r"truncated 8-byte word at the end of the file at byte offset 41"),
             "type_td.dat": (FormatError, "only CD events"), "v21.raw": (UnsupportedFormatError, "2.1"),
             "odd.raw": (FormatError, "truncated 2-byte word"), "x.xyz": (UnsupportedFormatError, "unknown"),
             "nothing": (UnsupportedFormatError, "neither a DSEC"), "bad.npz": (FormatError, "npz"),
             "bad.aedat4": (FormatError, "AEDAT4")}
    for name, (error, pattern) in cases.items():
        with pytest.raises(error, match=pattern) as info:
            open_recording(tmp_path / name)
        assert name in str(info.value)
