"""Fuzz the event readers with structured mutations of real recordings and of flexdet's own writers.

Each format (DAT, EVT2, EVT3, AEDAT4, DSEC h5, npz) gets mutated files: headers, declared sizes, signed
and byte-swapped dtypes, index tables, compressed chunks, plus bit flips, truncations and splices. Files
are read in child processes (a batch each) under a memory limit (RLIMIT_AS, 4 GiB by default) and a
per-file timeout, and every file ends in one outcome:

  ok           read completely; events inside the sensor, sorted, polarity 0/1, windows = slices of the full read
  flexdet      a FlexdetError (the promised answer to a bad file)
  garbage      read without error but breaking an invariant above
  window       a windowed read differing from the same window cut from the full read, without error
  foreign      an exception that is not a FlexdetError
  memory       MemoryError
  crash        the child process died (signal or abort) on the file
  hang         no answer within the timeout
  harness      the mutation itself failed to build a file (a bug of this script, not of the readers)

Cases are deterministic: (format, index, seed) always builds the same file, `--show FORMAT:INDEX` rebuilds
one and writes it to the current folder.

    nice -n 10 python tests/fuzz_readers.py --files 2000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from fuzz_driver import drive
from readers_helpers import random_events

FORMATS = ("dat", "evt2", "evt3", "aedat4", "dsec", "npz")
SUFFIX = {"dat": ".dat", "evt2": ".raw", "evt3": ".raw", "aedat4": ".aedat4", "dsec": ".h5", "npz": ".npz"}
OUTCOMES = ("ok", "flexdet", "garbage", "window", "foreign", "memory", "crash", "hang", "harness")
BAD_OUTCOMES = ("garbage", "window", "foreign", "memory", "crash", "hang")
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
INTERESTING_32 = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
INTERESTING_INT = (0, -1, 1, 2, 255, 256, 65535, 65536, 65537, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1,
                   2**64, 10**30)
DSEC_DTYPES = ("<u1", "<u2", "<u4", "<u8", "<i1", "<i2", "<i4", "<i8", ">u2", ">i4", ">u8", "<f4", "|b1")


# ---------------------------------------------------------------------------------------------- seeds


def _written(kind: str) -> bytes:
    """A small file of `kind` written by flexdet's own writers."""
    from flexdet.data.readers.evt_encode import write_raw
    from flexdet.data.writers import write_dat

    events = random_events(400, 64, 48, 30_000, seed=3)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"w{SUFFIX[kind]}"
        if kind == "dat":
            write_dat(path, events, 64, 48)
        else:
            write_raw(path, events, 64, 48, evt="2.0" if kind == "evt2" else "3.0")
        return path.read_bytes()


def _real_head(name: str, limit: int) -> bytes | None:
    path = REAL / name
    if not path.is_file():
        return None
    return path.read_bytes()[:limit]


def _aedat4_head(limit: int) -> bytes | None:
    """The real AEDAT4 recording cut after the packets that fit in `limit` bytes (a packet boundary)."""
    data = _real_head("dvxplorer_320x240.aedat4", 1 << 22)
    if data is None:
        return None
    position = 18 + struct.unpack("<I", data[14:18])[0]
    while position + 8 <= len(data):
        length = struct.unpack("<I", data[position + 4:position + 8])[0]
        if position + 8 + length > limit:
            break
        position += 8 + length
    header = 18 + struct.unpack("<I", data[14:18])[0]
    old = struct.pack("<q", len(data) - _trailer(data))
    at = data.find(old, 18, header)  # file_data_position: where the decoder stops, now the cut
    return data[:at] + struct.pack("<q", position) + data[at + 8:position]


def _trailer(data: bytes) -> int:
    """Bytes after the last packet (AEDAT4's table of packet positions)."""
    position = 18 + struct.unpack("<I", data[14:18])[0]
    while position + 8 <= len(data):
        length = struct.unpack("<I", data[position + 4:position + 8])[0]
        if position + 8 + length > len(data):
            break
        position += 8 + length
    return len(data) - position


def seeds(kind: str) -> list[bytes]:
    """The valid files mutations start from (real recordings first, then flexdet-written ones)."""
    if kind == "aedat4":
        head = _aedat4_head(60_000)
        return [head] if head else []
    if kind in ("dat", "evt2", "evt3"):
        real = {"dat": ("ncars_obj_004397_td.dat", 12_093), "evt2": ("evt2_gen3_640x480.raw", 40_164),
                "evt3": ("evt3_gen41_1280x720_pedestrians.raw", 36_920)}[kind]
        head = _real_head(*real)
        return ([head] if head else []) + [_written(kind)]
    return []


# ------------------------------------------------------------------------------------------ mutations


def _byte_mutation(rng: np.random.Generator, data: bytes, protect: int = 0) -> bytes:
    """One generic mutation: bit flips, byte values, a 32-bit field set to an interesting value, truncation,
    an inserted / deleted / duplicated span. `protect` bytes at the start are left alone half the time."""
    out = bytearray(data)
    if not out:
        return bytes(out)
    low = protect if protect < len(out) and rng.random() < 0.5 else 0
    choice = rng.integers(7)
    if choice == 0:
        for _ in range(rng.integers(1, 9)):
            out[rng.integers(low, len(out))] ^= 1 << int(rng.integers(8))
    elif choice == 1:
        for _ in range(rng.integers(1, 5)):
            out[rng.integers(low, len(out))] = int(rng.choice([0, 0xFF, 0x80, 0x7F, rng.integers(256)]))
    elif choice == 2 and len(out) >= 4:
        at = int(rng.integers(low, len(out) - 3)) & ~(0 if rng.random() < 0.5 else 3)
        out[at:at + 4] = struct.pack("<I", int(rng.choice(INTERESTING_32)))
    elif choice == 3:
        del out[rng.integers(max(low, 1), len(out) + 1):]
    elif choice == 4:
        at = int(rng.integers(low, len(out) + 1))
        out[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif choice == 5:
        at = int(rng.integers(low, len(out)))
        del out[at:at + int(rng.integers(1, 64))]
    else:
        a = int(rng.integers(low, len(out)))
        span = bytes(out[a:a + int(rng.integers(1, 256))])
        at = int(rng.integers(low, len(out) + 1))
        out[at:at] = span
    return bytes(out)


def _header_end(data: bytes) -> int:
    """Where a Prophesee '%' header ends (after '% end' or the last '%' line)."""
    pos = 0
    while pos < len(data) and data[pos:pos + 1] == b"%":
        newline = data.find(b"\n", pos)
        if newline < 0:
            return len(data)
        line = data[pos:newline]
        pos = newline + 1
        if line.strip() == b"% end":
            break
    return pos


def _prophesee_header_mutation(rng: np.random.Generator, data: bytes) -> bytes:
    end = _header_end(data)
    header, body = data[:end], data[end:]
    lines = header.split(b"\n")
    choice = rng.integers(5)
    value = str(rng.choice([str(v) for v in INTERESTING_INT] + ["48.5", "-5", "1e9", "\u00b2", "x"])).encode()
    if choice == 0:
        lines.insert(0, b"% Width " + value)
        lines.insert(0, b"% Height " + value)
    elif choice == 1:
        lines.insert(0, b"% format EVT" + rng.choice([b"3", b"2"]) + b";height=" + value + b";width=" + value)
    elif choice == 2:
        lines.insert(0, b"% geometry " + value + b"x" + value)
    elif choice == 3:
        lines = [line for line in lines if line.strip() != b"% end"] if rng.random() < 0.5 else \
            [line.replace(b"3.0", b"2.0").replace(b"2.0", b"3.0") for line in lines]
    else:
        i = int(rng.integers(len(lines)))
        lines[i] = lines[i][:2] + bytes([int(rng.integers(128, 256))]) + lines[i][2:]
    return b"\n".join(lines) + body


def _word_mutation(rng: np.random.Generator, data: bytes, word: int) -> bytes:
    """Mutate whole words of the body: a word type, a swapped block (time going backwards), a repeated block."""
    end = _header_end(data)
    if data[:end].count(b"\n") and word == 8 and len(data) > end + 2:
        end += 2  # DAT: event type and size bytes
    body = bytearray(data[end:])
    count = len(body) // word
    if count < 4:
        return data
    choice = rng.integers(3)
    if choice == 0:
        for _ in range(rng.integers(1, 6)):
            i = int(rng.integers(count)) * word + word - 1
            body[i] = (body[i] & 0x0F) | (int(rng.integers(16)) << 4)
    elif choice == 1:
        a, b = sorted(int(v) for v in rng.integers(0, count, 2))
        n = int(rng.integers(1, max(2, min(64, count - b))))
        block_a, block_b = bytes(body[a * word:(a + n) * word]), bytes(body[b * word:(b + n) * word])
        if len(block_a) == len(block_b):
            body[a * word:(a + n) * word], body[b * word:(b + n) * word] = block_b, block_a
    else:
        a = int(rng.integers(count))
        n = int(rng.integers(1, 64))
        body[a * word:a * word] = body[a * word:(a + n) * word]
    return data[:end] + bytes(body)


def _aedat4_fields(data: bytes) -> list[int]:
    """Byte offsets of the size fields an AEDAT4 decoder trusts: header length, packet lengths, LZ4 block sizes."""
    fields = [14]
    position = 18 + struct.unpack("<I", data[14:18])[0] if len(data) >= 18 else len(data)
    while position + 8 <= len(data):
        fields.append(position + 4)
        length = struct.unpack("<I", data[position + 4:position + 8])[0]
        body = position + 8
        if data[body:body + 4] == b"\x04\x22\x4d\x18":
            block = body + 7
            while block + 4 <= min(len(data), body + length):
                size = struct.unpack("<I", data[block:block + 4])[0]
                if size == 0:
                    break
                fields.append(block)
                block += 4 + (size & 0x7FFFFFFF)
        position = body + length
    return fields


def _aedat4_mutation(rng: np.random.Generator, data: bytes) -> bytes:
    out = bytearray(data)
    choice = rng.integers(4)
    if choice <= 1:
        fields = _aedat4_fields(data)
        at = fields[0] if choice == 0 and rng.random() < 0.3 else int(rng.choice(fields))
        value = int(rng.choice(INTERESTING_32)) if rng.random() < 0.7 else \
            struct.unpack("<I", out[at:at + 4])[0] + int(rng.integers(-16, 17))
        out[at:at + 4] = struct.pack("<I", value % 2**32)
    elif choice == 2:
        start = data.find(b"<dv")
        stop = data.find(b"</dv>")
        if start > 0 and stop > start:
            for _ in range(rng.integers(1, 4)):
                out[int(rng.integers(start, stop))] = int(rng.choice([0xFF, 0xC3, 0x80, 0xE2, 0x00, 0x3C]))
    else:
        header = 18 + min(struct.unpack("<I", data[14:18])[0], len(data))
        at = int(rng.integers(18, max(19, min(header, 18 + 64))))
        out[at] = int(rng.integers(256))
    return bytes(out)


def _pick(rng: np.random.Generator, options: list):
    """One of `options` (of mixed types, which rng.choice would turn into one numpy array)."""
    return options[int(rng.integers(len(options)))]


def _dsec_file(rng: np.random.Generator) -> bytes:
    """A DSEC-layout h5 built with mutated columns, index, offset and attributes (h5py writes it)."""
    import h5py
    import hdf5plugin

    from flexdet.data.writers import dsec_ms_to_idx

    n = int(rng.integers(1, 600))
    events = random_events(n, 64, 48, int(rng.integers(1, 40_000)), seed=int(rng.integers(1 << 30)))
    columns = {k: events[k].astype(np.int64) for k in "txyp"}
    index = dsec_ms_to_idx(columns["t"]).astype(np.int64)
    t_offset: object = np.int64(int(rng.integers(0, 2**40)))
    attrs: dict = {"width": 64, "height": 48}
    dtypes = {"t": "<u4", "x": "<u2", "y": "<u2", "p": "<u1"}
    index_dtype, index_shape = "<u8", None
    declared: dict = {}
    for _ in range(rng.integers(1, 4)):
        choice = rng.integers(10)
        name = str(rng.choice(list("txyp")))
        if choice == 0:
            dtypes[name] = str(rng.choice(DSEC_DTYPES))
        elif choice == 1:
            dtypes[name] = str(rng.choice(["<i1", "<i2", "<i4", "<i8"]))
            columns[name] = columns[name].astype(np.int64)
            columns[name][rng.integers(n)] = int(rng.choice([-1, -128, -2, -32768]))
        elif choice == 2:
            columns[name] = columns[name].astype(np.uint64)
            columns[name][rng.integers(n)] = int(rng.choice(INTERESTING_INT[2:14]))
            dtypes[name] = "<u8" if name == "t" else dtypes[name]
        elif choice == 3:
            kind = rng.integers(6)
            if kind == 0:
                index = index[:int(rng.integers(0, len(index) + 1))]
            elif kind == 1 and len(index):
                a = int(rng.integers(len(index)))
                index[a:a + int(rng.integers(1, 20))] = 0
            elif kind == 2:
                index = np.minimum(index + int(rng.integers(1, 50)), n) if rng.random() < 0.5 else index - 3
            elif kind == 3:
                index = rng.integers(0, n + 2, len(index))
            elif kind == 4:
                index = index[::-1].copy()
            else:
                index_shape = (int(rng.choice([2**36, 2**20, len(index) * 100])),)
        elif choice == 4:
            t_offset = _pick(rng, [np.int64(-1), np.uint64(2**64 - 1), np.int64(2**63 - 1), np.float64(1.5),
                                   np.arange(3), np.int64(-(2**62))])
        elif choice == 5:
            attrs[str(rng.choice(["width", "height"]))] = _pick(rng, [0, -1, 48.5, 2**40, "64", 1, 70000])
        elif choice == 6:
            if n >= 2:
                i = int(rng.integers(1, n))
                with np.errstate(over="ignore"):
                    columns["t"][i - 1], columns["t"][i] = columns["t"][i] + 5, columns["t"][i - 1]
        elif choice == 7:
            columns["t"] = columns["t"].astype(np.uint64)
            columns["t"][-1] = _pick(rng, [2**63 - 1, 2**64 - 1, 2**32 - 1, 2**62])
            dtypes["t"] = "<u8"
        elif choice == 8:
            declared[name] = int(rng.choice([2**40, 2**30, n + 1000]))
        else:
            index_dtype = str(rng.choice(["<i8", "<f8", "<u4", ">u8"]))
    chunks = int(rng.choice([16, 64, 4096]))
    compression = str(rng.choice(["none", "zstd", "gzip"]))
    filters = {"none": {}, "gzip": {"compression": "gzip"},
               "zstd": dict(hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.SHUFFLE))}[compression]
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        group = f.create_group("events")
        for name in "txyp":
            with np.errstate(all="ignore"):
                values = columns[name].astype(np.float64) if dtypes[name] == "<f4" else columns[name]
                data = np.asarray(values).astype(np.dtype(dtypes[name]))
            if name in declared:
                group.create_dataset(name, shape=(max(declared[name], n),), dtype=data.dtype,
                                     chunks=(min(chunks, max(declared[name], n)),), **filters)
                group[name][:n] = data
            else:
                group.create_dataset(name, data=data, chunks=(min(chunks, max(n, 1)),), **filters)
        for key, value in attrs.items():
            group.attrs[key] = value
        f.create_dataset("t_offset", data=t_offset)
        if index_shape is None:
            f.create_dataset("ms_to_idx", data=np.asarray(index).astype(np.dtype(index_dtype)))
        else:
            f.create_dataset("ms_to_idx", shape=index_shape, dtype=index_dtype)
    return buffer.getvalue()


def _npz_file(rng: np.random.Generator) -> bytes:
    """An npz of t, x, y, p with mutated dtypes, byte orders, shapes, headers or zip fields."""
    n = int(rng.integers(1, 500))
    events = random_events(n, 64, 48, 30_000, seed=int(rng.integers(1 << 30)))
    arrays = {k: events[k].copy() for k in "txyp"}
    arrays.update(width=np.int64(64), height=np.int64(48))
    for _ in range(rng.integers(0, 3)):
        choice = rng.integers(5)
        name = str(rng.choice(list("txyp")))
        if choice == 0:
            arrays[name] = arrays[name].astype(str(rng.choice(DSEC_DTYPES)))
        elif choice == 1:
            arrays[name] = arrays[name].astype(str(rng.choice(["<i1", "<i2", "<i4", "<i8"])))
            if arrays[name].size:
                arrays[name][rng.integers(len(arrays[name]))] = int(rng.choice([-1, -128, -2]))
        elif choice == 2:
            arrays[name] = arrays[name].astype("<u8" if name == "t" else "<i8")
            if arrays[name].size:
                arrays[name][rng.integers(len(arrays[name]))] = int(rng.choice([2**63 - 1, 2**40, 65535, 65536]))
        elif choice == 3:
            arrays[str(rng.choice(["width", "height"]))] = _pick(rng, [np.int64(0), np.float64(48.5),
                                                                       np.int64(2**40), np.arange(2)])
        else:
            arrays[name] = arrays[name][:int(rng.integers(0, n))] if rng.random() < 0.5 else \
                arrays[name].reshape(-1, 1)
    buffer = io.BytesIO()
    (np.savez_compressed if rng.random() < 0.5 else np.savez)(buffer, **arrays)
    data = buffer.getvalue()
    choice = rng.integers(4)
    if choice == 0:
        start = data.find(b"'shape': (")
        if start > 0:
            stop = data.find(b")", start)
            shape = str(rng.choice(["(1099511627776,)", "(2**40,)", "(-1,)", "(99999999999,", "(3, 5)"])).encode()
            data = data[:start + 9] + shape + data[stop + 1:]
    elif choice == 1:
        data = _zip_field_mutation(rng, data)
    elif choice == 2:
        data = _byte_mutation(rng, data)
    return data


def _zip_field_mutation(rng: np.random.Generator, data: bytes) -> bytes:
    """Set a size or offset field of a zip local / central header to an interesting value."""
    out = bytearray(data)
    spots = []
    for signature, fields in ((b"PK\x03\x04", (18, 22)), (b"PK\x01\x02", (20, 24, 42))):
        at = out.find(signature)
        while at >= 0:
            spots.extend(at + f for f in fields)
            at = out.find(signature, at + 4)
    if spots:
        at = int(rng.choice(spots))
        out[at:at + 4] = struct.pack("<I", int(rng.choice(INTERESTING_32)))
    return bytes(out)


def make_case(kind: str, index: int, seed: int) -> bytes:
    """The mutated file number `index` of format `kind` (deterministic in (kind, index, seed))."""
    rng = np.random.default_rng([seed, FORMATS.index(kind), index])
    if kind == "dsec":
        data = _dsec_file(rng)
        return _byte_mutation(rng, data) if rng.random() < 0.3 else data
    if kind == "npz":
        return _npz_file(rng)
    base = seeds(kind)
    data = base[int(rng.integers(len(base)))]
    for _ in range(rng.integers(1, 3)):
        choice = rng.random()
        if kind == "aedat4":
            data = _aedat4_mutation(rng, data) if choice < 0.6 else _byte_mutation(rng, data, protect=18)
        elif choice < 0.3:
            data = _prophesee_header_mutation(rng, data)
        elif choice < 0.6:
            data = _word_mutation(rng, data, {"dat": 8, "evt2": 4, "evt3": 2}[kind])
        else:
            data = _byte_mutation(rng, data, protect=_header_end(data))
    return data


# ------------------------------------------------------------------------------------- reading a case


def classify(path: Path, kind: str, rng: np.random.Generator) -> tuple[str, str]:
    """(outcome, detail) of reading `path` fully and in windows."""
    from flexdet.data import open_recording
    from flexdet.errors import FlexdetError

    options = {"chunk_bytes": 4096, "index_step_us": 2_000, "cache_index": False} \
        if kind in ("dat", "evt2", "evt3") else {}
    try:
        with open_recording(path, **options) as recording:
            full = recording.read()
            problem = _invariants(recording, full)
            if problem:
                return "garbage", problem
            span = (recording.t_start, recording.t_end)
            windows = [(span[0], span[1]), (span[0] - 5, span[0] + 1)]
            if span[1] > span[0]:
                windows += [tuple(sorted(int(v) for v in rng.integers(span[0], span[1] + 1, 2)))
                            for _ in range(4)]
            for a, b in windows:
                try:
                    part = recording.read(a, b)
                except FlexdetError:
                    continue
                expected = full[(full["t"] >= a) & (full["t"] < b)]
                if part.dtype != expected.dtype or not np.array_equal(part, expected):
                    return "window", f"read({a}, {b}) gave {len(part)} events, the full read has {len(expected)}"
    except FlexdetError as exc:
        return "flexdet", type(exc).__name__
    except MemoryError as exc:
        return "memory", str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 (what the fuzzing looks for)
        return "foreign", f"{type(exc).__name__}: {str(exc)[:200]}"
    return "ok", ""


def _invariants(recording, events: np.ndarray) -> str:
    from flexdet.data.events import EVENT_DTYPE

    if events.dtype != EVENT_DTYPE:
        return f"dtype {events.dtype}"
    if recording.num_events is not None and len(events) != recording.num_events:
        return f"{len(events)} events read, num_events says {recording.num_events}"
    if not len(events):
        return ""
    if recording.sensor_size_known:
        if int(events["x"].max()) >= recording.width or int(events["y"].max()) >= recording.height:
            return f"event outside the {recording.width}x{recording.height} sensor"
    if int(events["p"].max()) > 1:
        return "polarity above 1"
    if np.any(np.diff(events["t"]) < 0):
        return "times not sorted"
    if int(events["t"][0]) != recording.t_start or int(events["t"][-1]) + 1 != recording.t_end:
        return "t_start / t_end disagree with the events"
    return ""


def child(cases: list[tuple[str, int]], seed: int) -> None:
    """Read each case and print 'S k' before and 'R k outcome detail' after it (the parent watches)."""
    with tempfile.TemporaryDirectory() as folder:
        for kind, index in cases:
            path = Path(folder) / f"case{SUFFIX[kind]}"
            for leftover in Path(folder).iterdir():
                leftover.unlink()
            print(f"S {kind} {index}", flush=True)
            try:
                path.write_bytes(make_case(kind, index, seed))
            except Exception as exc:  # noqa: BLE001 (a generator bug must not stop the run; it is reported)
                print(f"R {kind} {index} harness {json.dumps(f'{type(exc).__name__}: {exc}')}", flush=True)
                continue
            outcome, detail = classify(path, kind, np.random.default_rng([seed, index, 7]))
            print(f"R {kind} {index} {outcome} {json.dumps(detail)}", flush=True)


# --------------------------------------------------------------------------------------- the parent


def _limit(memory_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    return apply


def run(cases: list[tuple[str, int]], seed: int, memory_bytes: int = 4 << 30, timeout_s: float = 30.0,
        first_timeout_s: float = 300.0, batch: int = 400, log=None) -> dict[tuple[str, int], tuple[str, str]]:
    """Outcome of every case, read by child processes of at most `batch` cases; a crash or a hang ends the
    child, is recorded for the case it was on, and a fresh child continues after it."""
    results: dict[tuple[str, int], tuple[str, str]] = {}

    def on_line(line: str) -> None:
        parts = line.rstrip("\n").split(" ", 4)
        if parts[0] == "R":
            results[(parts[1], int(parts[2]))] = (parts[3], json.loads(parts[4]))
            if log and parts[3] in BAD_OUTCOMES:
                log(f"{parts[1]} #{parts[2]}: {parts[3]} {json.loads(parts[4])}")

    def on_hang(case: tuple[str, int], limit: float) -> None:
        results[case] = ("hang", f"no answer within {limit:.0f} s")

    def on_crash(case: tuple[str, int], status: int, tail: str) -> None:
        results[case] = ("crash", f"exit status {status}: {tail}")

    drive(lambda chunk: [sys.executable, __file__, "--child", json.dumps(chunk), "--seed", str(seed)], cases,
          first_timeout_s=first_timeout_s, timeout_s=timeout_s, on_line=on_line, on_hang=on_hang,
          on_crash=on_crash, batch=batch, env=dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1"),
          preexec_fn=_limit(memory_bytes))
    return results


def table(results: dict[tuple[str, int], tuple[str, str]], formats=FORMATS) -> str:
    counts = {kind: Counter() for kind in formats}
    for (kind, _), (outcome, _) in results.items():
        counts[kind][outcome] += 1
    head = f"| format | files | {' | '.join(OUTCOMES)} |"
    rows = [head, "|" + "---|" * (len(OUTCOMES) + 2)]
    for kind in formats:
        rows.append(f"| {kind} | {sum(counts[kind].values())} | "
                    + " | ".join(str(counts[kind][o]) for o in OUTCOMES) + " |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="mutated files per format")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-gib", type=float, default=4.0, help="RLIMIT_AS of the reading processes")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one file may take")
    parser.add_argument("--workers", type=int, default=1, help="child processes at once")
    parser.add_argument("--show", help="FORMAT:INDEX: write that case's file here and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child([(k, int(i)) for k, i in json.loads(args.child)], args.seed)
        return 0
    if args.show:
        kind, index = args.show.split(":")
        path = Path(f"fuzz_{kind}_{index}{SUFFIX[kind]}")
        path.write_bytes(make_case(kind, int(index), args.seed))
        print(path)
        return 0
    formats = [f for f in args.formats.split(",") if f]
    cases = [(kind, i) for i in range(args.files) for kind in formats]
    start = time.monotonic()
    parts = [cases[w::args.workers] for w in range(args.workers)]
    results: dict = {}
    threads = [threading.Thread(target=lambda p=p: results.update(
        run(p, args.seed, int(args.memory_gib * 2**30), args.timeout, log=print))) for p in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"\n{len(results)} files, {time.monotonic() - start:.0f} s wall, seed {args.seed}, "
          f"RLIMIT_AS {args.memory_gib:g} GiB, timeout {args.timeout:g} s\n")
    print(table(results, formats))
    bad = sum(1 for outcome, _ in results.values() if outcome in BAD_OUTCOMES)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
