"""Regression tests of hostile and broken input (issue "Hostile and broken input", failures 1-6).

Cases that could take the process down (an abort in a third-party decoder, an allocation under a memory
limit) run in a child process, so a crash fails the test instead of ending the test run.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
from readers_helpers import random_events, real_file

from flexdet.data import open_recording, read_events
from flexdet.data.events import make_events
from flexdet.data.readers.evt_encode import write_raw
from flexdet.data.representations import event_frame, stacked_histogram, time_surface, voxel_grid
from flexdet.data.writers import dsec_ms_to_idx, write_dat, write_dsec_h5, write_npz
from flexdet.errors import FlexdetError, FormatError

EVENTS = random_events(3000, 64, 48, 30_000, seed=5)


def run_child(code: str, memory_gib: float = 4.0) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python under RLIMIT_AS; the test reads its exit status and output."""
    prelude = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({int(memory_gib * 2**30)},) * 2)\n")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


def expect_format_error_in_child(path: Path) -> None:
    result = run_child(f"""
        from flexdet.data import read_events
        from flexdet.errors import FormatError
        try:
            read_events({str(path)!r})
        except FormatError as exc:
            print("FormatError:", exc)
        """)
    assert result.returncode == 0, f"child died with status {result.returncode}: {result.stderr[-500:]}"
    assert "FormatError:" in result.stdout and str(path) in result.stdout, result.stdout


# -- 1. AEDAT4: a non-UTF-8 header and 0xFFFFFFFF sizes abort the aedat decoder --------------------------


def _aedat4_bytes() -> bytearray:
    return bytearray(real_file("dvxplorer_320x240.aedat4").read_bytes())


def test_aedat4_non_utf8_header_is_a_format_error_not_an_abort(tmp_path):
    data = _aedat4_bytes()
    data[data.find(b"<dv version") + 25] = 0xC3  # a UTF-8 lead byte before ASCII: the decoder panics twice
    path = tmp_path / "bad_xml.aedat4"
    path.write_bytes(bytes(data))
    expect_format_error_in_child(path)


@pytest.mark.parametrize("field", ["header", "packet"])
def test_aedat4_size_fields_of_ffffffff_are_refused_under_a_memory_limit(tmp_path, field):
    data = _aedat4_bytes()
    header_length = struct.unpack("<I", data[14:18])[0]
    at = 14 if field == "header" else 18 + header_length + 4
    data[at:at + 4] = b"\xff\xff\xff\xff"
    path = tmp_path / f"{field}.aedat4"
    path.write_bytes(bytes(data))
    expect_format_error_in_child(path)


# -- 2. DSEC: signed columns ---------------------------------------------------------------------------


def write_dsec_columns(path: Path, index=None, **columns) -> Path:
    """A DSEC-layout file of EVENTS with some columns replaced (any dtype) and optionally another ms_to_idx."""
    t = EVENTS["t"].astype(np.int64)
    values = {"t": t.astype(np.uint32), "x": EVENTS["x"], "y": EVENTS["y"], "p": EVENTS["p"], **columns}
    with h5py.File(path, "w") as f:
        group = f.create_group("events")
        for name in "txyp":
            group.create_dataset(name, data=values[name], chunks=(256,))
        group.attrs["width"], group.attrs["height"] = 64, 48
        f.create_dataset("t_offset", data=np.int64(0))
        f.create_dataset("ms_to_idx", data=dsec_ms_to_idx(t) if index is None else index)
    return path


@pytest.mark.parametrize("column,dtype", [("x", np.int16), ("y", np.int32), ("p", np.int8)])
def test_dsec_negative_values_of_signed_columns_are_errors_not_wrapped(tmp_path, column, dtype):
    values = EVENTS[column].astype(dtype)
    values[17] = -1
    path = write_dsec_columns(tmp_path / "signed.h5", **{column: values})
    with pytest.raises(FormatError, match="index 17"):
        read_events(path)


# -- 3. DSEC: ms_to_idx is checked against the times it indexes ------------------------------------------


def _index_variants() -> dict[str, np.ndarray]:
    index = dsec_ms_to_idx(EVENTS["t"].astype(np.int64)).astype(np.int64)
    zeroed = index.copy()
    zeroed[10:20] = 0
    return {"short": index[:8], "stale": np.minimum(index + 40, len(EVENTS)), "partly_zeroed": zeroed,
            "empty": index[:0]}


@pytest.mark.parametrize("variant", sorted(_index_variants()))
def test_dsec_windows_equal_the_full_read_whatever_ms_to_idx_says(tmp_path, variant):
    path = write_dsec_columns(tmp_path / "events.h5", index=_index_variants()[variant].astype(np.uint64))
    with open_recording(path) as recording:
        full = recording.read()
        assert np.array_equal(full["t"], EVENTS["t"])
        for t0, t1 in [(12_000, 18_000), (0, 5_000), (25_000, 40_000), (recording.t_start, recording.t_end)]:
            expected = full[(full["t"] >= t0) & (full["t"] < t1)]
            assert np.array_equal(recording.read(t0, t1), expected), (variant, t0, t1)


def test_dsec_last_event_at_int64_max_is_refused_not_dropped(tmp_path):
    t = EVENTS["t"].astype(np.uint64)
    t[-1] = 2**63 - 1
    path = write_dsec_columns(tmp_path / "events.h5", t=t)
    with pytest.raises(FormatError, match="int64"):
        with open_recording(path) as recording:
            recording.read(recording.t_start, recording.t_end)


def test_window_end_beyond_int64_keeps_the_last_event(tmp_path):
    events = make_events([1, 5, 2**63 - 2], [0, 1, 2], [0, 0, 0], [1, 0, 1])
    write_npz(tmp_path / "e.npz", events, 4, 4)
    with open_recording(tmp_path / "e.npz") as recording:
        assert recording.t_end == 2**63 - 1
        assert len(recording.read(0, 2**64)) == 3


# -- 4. Representations: order outside the searched window, int64 spans ----------------------------------


@pytest.mark.parametrize("build", [stacked_histogram, voxel_grid, time_surface, event_frame])
def test_an_event_out_of_order_outside_the_window_is_an_error(build):
    events = make_events([5, 100, 10], [0, 1, 2], [0, 0, 0], [1, 1, 1])  # 5 and 10 lie in [0, 50)
    with pytest.raises(FlexdetError, match="time-sorted"):
        build(events, 4, 4, t_start=0, t_end=50)


@pytest.mark.parametrize("build", [stacked_histogram, voxel_grid])
def test_a_window_spanning_2_63_us_is_refused_not_wrapped(build):
    events = make_events([-(2**62), 2**62], [0, 1], [0, 0], [1, 1])
    with pytest.raises(FlexdetError, match="too long"):
        build(events, 4, 4, t_start=-(2**63), t_end=2**63 - 1)
    with pytest.raises(FlexdetError, match="too long"):
        build(events, 4, 4)


# -- 5. Foreign exceptions become FormatError naming the file --------------------------------------------


@pytest.mark.parametrize("kind", ["dat", "evt2", "evt3"])
def test_header_sizes_beyond_64_bits_are_format_errors(tmp_path, kind):
    huge = "9" * 30
    if kind == "dat":
        data = f"% Width {huge}\n% Height {huge}\n".encode() + bytes([0, 8]) + bytes(16)
        path = tmp_path / "big_td.dat"
    else:
        data = f"% evt {kind[-1]}.0\n% format {kind.upper()};height={huge};width={huge}\n% end\n".encode() + bytes(8)
        path = tmp_path / f"big_{kind}.raw"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=str(path)):
        read_events(path, cache_index=False)


def test_corrupt_hdf5_metadata_is_a_format_error(tmp_path):
    path = tmp_path / "events.h5"
    write_dsec_h5(path, EVENTS, width=64, height=48)
    with h5py.File(path, "a") as f:  # /events/t a group: h5py raises TypeError / KeyError on it
        del f["events/t"]
        f["events"].create_group("t")
    with pytest.raises(FormatError, match=str(path)):
        read_events(path)


def _npz_with(tmp_path: Path, name: str, mutate) -> Path:
    path = tmp_path / name
    buffer = io.BytesIO()
    np.savez_compressed(buffer, t=EVENTS["t"], x=EVENTS["x"], y=EVENTS["y"], p=EVENTS["p"])
    path.write_bytes(mutate(buffer.getvalue()))
    return path


def test_corrupt_npz_streams_and_headers_are_format_errors(tmp_path):
    def break_deflate(data: bytes) -> bytes:  # zlib.error from the member's deflate stream
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo("x.npy")
        names, extra = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        start = info.header_offset + 30 + names + extra
        out = bytearray(data)
        out[start:start + 40] = b"\xff" * 40
        return bytes(out)

    def break_header(data: bytes) -> bytes:  # tokenize.TokenError from the .npy header text
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                member = src.read(info)
                if info.filename == "t.npy":
                    member = member.replace(b"'shape': (", b"'shape': ((")
                dst.writestr(info.filename, member)
        return out.getvalue()

    for name, mutate in (("deflate.npz", break_deflate), ("header.npz", break_header)):
        path = _npz_with(tmp_path, name, mutate)
        with pytest.raises(FormatError, match=str(path)):
            read_events(path)


def test_big_endian_columns_read_and_build_correctly(tmp_path):
    x = EVENTS["x"].astype(">u2")
    path = write_dsec_columns(tmp_path / "events.h5", x=x)
    assert np.array_equal(read_events(path)["x"], EVENTS["x"])
    swapped = EVENTS.astype([("t", ">i8"), ("x", ">u2"), ("y", ">u2"), ("p", "u1")])
    assert np.array_equal(stacked_histogram(swapped, 48, 64, 2), stacked_histogram(EVENTS, 48, 64, 2))


@pytest.mark.parametrize("arguments", [{"bins": 2.5}, {"height": 48.5}, {"width": True}, {"bins": 0}])
def test_kernel_arguments_of_the_wrong_type_or_value_are_flexdet_errors(arguments):
    call = {"height": 48, "width": 64, "bins": 2, **arguments}
    with pytest.raises(FlexdetError):
        stacked_histogram(EVENTS, call["height"], call["width"], call["bins"])
    with pytest.raises(FlexdetError):
        voxel_grid(EVENTS, call["height"], call["width"], call["bins"])


def test_representation_config_and_events_norm_windows_get_the_same_checks():
    from flexdet.data.representations.batch import RepresentationConfig, make_representation

    with pytest.raises(FlexdetError, match="whole number"):
        RepresentationConfig(bins=2.5)
    events = make_events([5, 100, 10], [0, 1, 2], [0, 0, 0], [1, 1, 1])
    with pytest.raises(FlexdetError, match="time-sorted"):
        make_representation(events, 4, 4, RepresentationConfig(time_norm="events"), 0, 50)


# -- 6. Declared sizes are checked before allocating -----------------------------------------------------


def test_dsec_declaring_2_36_index_entries_or_2_40_events_is_refused_promptly(tmp_path):
    index_path = write_dsec_columns(tmp_path / "index.h5")
    with h5py.File(index_path, "a") as f:
        del f["ms_to_idx"]
        f.create_dataset("ms_to_idx", shape=(2**36,), dtype="<u8")
    events_path = tmp_path / "events.h5"
    with h5py.File(events_path, "w") as f:
        group = f.create_group("events")
        for name in "txyp":
            group.create_dataset(name, shape=(2**40,), dtype="<u4", chunks=(1 << 16,))
        f.create_dataset("t_offset", data=np.int64(0))
        f.create_dataset("ms_to_idx", data=np.zeros(4, np.uint64))
    for path in (index_path, events_path):
        assert path.stat().st_size < 100_000
        expect_format_error_in_child(path)


def test_npz_declaring_2_40_elements_is_refused_before_numpy_allocates(tmp_path):
    def declare_huge(data: bytes) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                member = src.read(info)
                if info.filename == "t.npy":
                    end = member.index(b"\n") + 1
                    header = member[:end].replace(b"(3000,)", b"(1099511627776,)").replace(b"         \n", b"\n")
                    member = header + member[end:]
                dst.writestr(info.filename, member)
        return out.getvalue()

    expect_format_error_in_child(_npz_with(tmp_path, "huge.npz", declare_huge))


def test_a_billion_bins_is_refused_before_allocating():
    result = run_child("""
        import numpy as np
        from flexdet.data.events import make_events
        from flexdet.data.representations import voxel_grid
        from flexdet.errors import FlexdetError
        try:
            voxel_grid(make_events([0, 1], [0, 1], [0, 0], [1, 0]), 480, 640, bins=10**9)
        except FlexdetError as exc:
            print("refused:", exc)
        """)
    assert result.returncode == 0 and "refused:" in result.stdout, result.stderr[-500:]


# -- The writers' own files still read exactly ------------------------------------------------------------


def test_valid_files_of_every_writer_still_read_exactly(tmp_path):
    write_dsec_h5(tmp_path / "events.h5", EVENTS, width=64, height=48)
    write_dat(tmp_path / "e_td.dat", EVENTS, 64, 48)
    write_raw(tmp_path / "e3.raw", EVENTS, 64, 48, evt="3.0")
    write_npz(tmp_path / "e.npz", EVENTS, 64, 48)
    for name in ("events.h5", "e_td.dat", "e3.raw", "e.npz"):
        assert np.array_equal(read_events(tmp_path / name), EVENTS), name
