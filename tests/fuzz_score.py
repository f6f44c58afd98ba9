"""Fuzz `flexdet score`'s inputs: label and prediction .npy files, their folders and the YAML that lists sequences.

Three seeds, each a valid input flexdet scores: a Gen1 root (`test/<seq>_bbox.npy`, Gen1's ts / confidence dtype)
with predictions in the Prophesee and flexdet dtypes, a DSEC-Det root (tracks.npy, its own
train_val_test_split.yaml) and a quickstart-style synthetic folder (dataset.yaml) with `flexdet eval`'s
predictions/20hz. Mutant (seed, index) always builds the same files: values (nan, inf, out-of-range, fractional,
wide or byte-swapped dtypes), fields (aliases, duplicates, unknown, dropped, reordered, 2-D, objects, subarrays),
rows (dropped, duplicated, shuffled, none), bytes (truncation, flips, declared shapes up to 10^12 rows, appended
garbage, npz or text instead of npy), folders (missing, extra, label-named or linked files, rate folders, the
labels as predictions) and YAML (missing keys, wrong types, unsafe or missing names, an alias bomb, garbage).

The oracle. Each mutation states what a correct scorer must do: "refuse" (folder and YAML breakage), "same" (a
harmless change: the clean input's report) or "reference": the harness reads every file with its own reader of
the format's rules (header shape equal to the bytes held, 1-D structured rows, known unambiguous numeric fields,
finite float32 values, integral in-range times / ids / tracks, a score in predictions, label class ids the
benchmark's files have, some ground truth left to score), written element by element in Python apart from the
product's vectorised one; a file it rejects means the mutant must be refused, otherwise the expected report is
the benchmark scorer (`score_sequences`, checked against RVT's evaluator elsewhere) on the rows it read. Outcomes:

  accepted      exit 0 and the JSON equal to the expectation (metrics, sequences, instants, box and row counts)
  refused       exit 2 with one line "flexdet score: error: ..." where the expectation is a refusal
  wrong         exit 0 where a refusal was expected, or a report that differs from the expectation
  over-refused  refused although the oracle reads the input as valid
  traceback     any exception other than FlexdetError (or a multi-line / missing error message)
  memory        tracemalloc peak above MEMORY_BOUND (64 MiB + 50 x the input's bytes) or a MemoryError
  hang          no answer within the per-case timeout (the child is killed and the run goes on)
  harness       the mutation itself failed to build (a bug of this script)

Cases run in child processes (a batch each) under RLIMIT_AS; the peak is measured by tracemalloc around the
command after a warm-up run of the clean seed.

    OMP_NUM_THREADS=1 nice -n 10 python tests/fuzz_score.py --mutants 2000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import tokenize
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from fuzz_driver import drive

SEEDS = ("gen1", "dsec", "synthetic")
OUTCOMES = ("accepted", "refused", "wrong", "over-refused", "traceback", "memory", "hang", "harness")
BAD_OUTCOMES = ("wrong", "over-refused", "traceback", "memory", "hang", "harness")
FAMILIES = ("value", "value", "value", "dtype", "dtype", "rows", "bytes", "bytes", "folder", "yaml")
NAMES = {"gen1": ("seq_a", "seq_b"), "dsec": ("zurich_a", "zurich_b"), "synthetic": ("synth_000", "synth_001")}
BENCHMARK = {"gen1": "gen1", "dsec": "dsec2", "synthetic": "synthetic"}
LABEL_IDS = {"gen1": {0, 1}, "dsec": set(range(8)), "synthetic": {0, 2}}
GEN1_DTYPE = np.dtype([("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1"),
                       ("confidence", "<f4"), ("track_id", "<u4")])
FILE_DTYPE = np.dtype([("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1"),
                       ("class_confidence", "<f4"), ("track_id", "<u4")])
PROPHESEE_DTYPE = np.dtype([("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "<u4"),
                            ("track_id", "<u4"), ("class_confidence", "<f4")])
ALIASES = {"t": ("t", "ts"), "x": ("x",), "y": ("y",), "w": ("w",), "h": ("h",), "class_id": ("class_id",),
           "class_confidence": ("class_confidence", "confidence", "class_conf"), "track_id": ("track_id",)}
TARGETS = {"t": np.dtype("<i8"), "x": np.dtype("<f4"), "y": np.dtype("<f4"), "w": np.dtype("<f4"),
           "h": np.dtype("<f4"), "class_id": np.dtype("u1"), "class_confidence": np.dtype("<f4"),
           "track_id": np.dtype("<u4")}
VALUES = (math.nan, math.inf, -math.inf, 1e39, -1e39, 3e38, -1, 0, 0.5, 1.5, 7, 255, 256, 65535, 2**31, 2**32,
          2**53 + 1, 2**63, 2**64 - 1, -(2**63), 1e18, 600_000, 10**15)
DTYPES = ("<f8", "<i8", "<u8", "<f4", ">f8", "<i4", "<f2", "<u2", ">i8", "|b1")
FIELD_NAMES = ("ts", "t", "confidence", "class_conf", "class_confidence", "track_id", "score", "foo", "X", "x ")
MEMORY_BASE = 64 * 2**20


def memory_bound(input_bytes: int) -> int:
    """The stated bound on a mutant's peak: 64 MiB + 50 x the bytes of its input files."""
    return MEMORY_BASE + 50 * input_bytes


# ---------------------------------------------------------------------------------------------------- seeds


def _labels(kind: str, index: int) -> np.ndarray:
    """A seed's label rows: 8 instants x 3 boxes past the 0.5 s skip, sizes every benchmark scores."""
    rng = np.random.default_rng(100 + index)
    n = 24
    scale = 1 if kind == "gen1" else 2 if kind == "dsec" else 0.4
    rows = np.zeros(n, GEN1_DTYPE if kind == "gen1" else FILE_DTYPE)
    start = 600_000 if kind == "gen1" else 10**15 if kind == "dsec" else 0
    rows["ts" if kind == "gen1" else "t"] = np.repeat(start + 50_000 * np.arange(8), 3)
    rows["x"], rows["y"] = rng.uniform(0, 230, n) * scale, rng.uniform(0, 160, n) * scale
    rows["w"], rows["h"] = rng.uniform(35, 60, n) * scale, rng.uniform(28, 50, n) * scale
    rows["class_id"] = rng.choice(sorted(LABEL_IDS[kind])[:2] if kind != "dsec" else [0, 2], n)
    rows["confidence" if kind == "gen1" else "class_confidence"] = 1
    rows["track_id"] = np.arange(n)
    return rows


def _predictions(labels: np.ndarray, index: int, dtype: np.dtype) -> np.ndarray:
    """Detections near the labels, some shifted off, with scores (an AP inside (0, 1))."""
    rng = np.random.default_rng(200 + index)
    n = len(labels)
    rows = np.zeros(2 * n, dtype)
    times = labels["ts"] if "ts" in labels.dtype.names else labels["t"]
    rows["t"] = np.concatenate([times, times])
    for field in ("x", "y", "w", "h", "class_id"):
        rows[field] = np.concatenate([labels[field], labels[field]])
    rows["x"][:n] += rng.normal(0, 3, n).astype(np.float32)
    rows["x"][n:] += 30
    rows["class_confidence"] = rng.uniform(0.05, 1, 2 * n)
    return rows


def build_seed(kind: str, root: Path) -> tuple[list[str], dict[str, Path], dict[str, Path]]:
    """Write a seed under `root`; its score arguments, label file and prediction file of each sequence."""
    names = NAMES[kind]
    labels_root = root / "labels"
    predictions = root / "eval" / "predictions" / "20hz" if kind == "synthetic" else root / "predictions"
    predictions.mkdir(parents=True)
    label_paths, prediction_paths = {}, {}
    for i, name in enumerate(names):
        if kind == "gen1":
            path = labels_root / "test" / f"{name}_bbox.npy"
        else:
            path = labels_root / "test" / name / "object_detections" / "left" / "tracks.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = _labels(kind, i)
        np.save(path, rows)
        label_paths[name] = path
        prediction_paths[name] = predictions / f"{name}.npy"
        np.save(prediction_paths[name], _predictions(rows, i, PROPHESEE_DTYPE if i == 0 else FILE_DTYPE))
    if kind == "dsec":
        (labels_root / "train_val_test_split.yaml").write_text(yaml.safe_dump(
            {"train": [], "val": [], "test": list(names)}))
    if kind == "synthetic":
        (labels_root / "dataset.yaml").write_text(yaml.safe_dump(
            {"layout": "dsec", "classes": {0: "pedestrian", 2: "car"}, "width": 128, "height": 96,
             "label_rate_hz": 20.0, "splits": {"train": [], "val": [], "test": list(names)},
             "t_offsets": {name: 0 for name in names}}))
    args = ["score", "--benchmark", BENCHMARK[kind], "--labels", str(labels_root), "--predictions", str(predictions),
            "--json"]
    return args, label_paths, prediction_paths


# ------------------------------------------------------------------------------------------------ mutations


def _save_raw(path: Path, array: np.ndarray) -> None:
    """np.save `array` to `path` as it is (objects pickled: the mutation is the file)."""
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=array.dtype.hasobject)


def _with_field_dtype(rows: np.ndarray, field: str, dtype: str) -> np.ndarray:
    """`rows` with `field` stored as `dtype` (values cast as numpy casts them: that is the mutated data)."""
    descr = [(name, dtype if name == field else rows.dtype[name].str) for name in rows.dtype.names]
    out = np.zeros(len(rows), descr)
    with np.errstate(all="ignore"), _quiet():
        for name in rows.dtype.names:
            out[name] = rows[name]
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's cast warnings while a mutation casts values on purpose."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def mutate_value(rng: np.random.Generator, path: Path) -> str:
    """One value of one field set to an interesting number, the field maybe stored in another dtype."""
    rows = np.load(path)
    field = str(rng.choice(rows.dtype.names))
    row = int(rng.integers(0, len(rows)))
    value = VALUES[int(rng.integers(0, len(VALUES)))]
    dtype = str(rng.choice(DTYPES)) if rng.random() < 0.6 else rows.dtype[field].str
    rows = _with_field_dtype(rows, field, dtype)
    try:
        with np.errstate(all="ignore"), _quiet():
            rows[field][row] = value
    except (OverflowError, ValueError, TypeError):
        rows = _with_field_dtype(rows, field, "<f8")
        rows[field][row] = float(value)
    _save_raw(path, rows)
    return f"value {path.name} row {row} {field}:{dtype} = {value!r}"


def mutate_dtype(rng: np.random.Generator, path: Path) -> str:
    """The fields: renamed, added, dropped, reordered, retyped, not 1-D structured, objects or subarrays."""
    rows = np.load(path)
    names = list(rows.dtype.names)
    choice = int(rng.integers(0, 8))
    if choice == 0:  # rename a field
        old, new = str(rng.choice(names)), str(rng.choice(FIELD_NAMES))
        if new in names:
            return mutate_dtype(rng, path)
        rows = rows.astype([(new if n == old else n, rows.dtype[n].str) for n in names])
        note = f"rename {old}->{new}"
    elif choice == 1:  # add a field, a copy of another
        new, source = str(rng.choice(FIELD_NAMES)), str(rng.choice(names))
        if new in names:
            return mutate_dtype(rng, path)
        out = np.zeros(len(rows), rows.dtype.descr + [(new, rows.dtype[source].str)])
        for n in names:
            out[n] = rows[n]
        out[new] = rows[source]
        rows, note = out, f"add {new}=copy of {source}"
    elif choice == 2:  # drop a field
        gone = str(rng.choice(names))
        rows = rows[[n for n in names if n != gone]].copy()
        rows = rows.astype([(n, rows.dtype[n].str) for n in rows.dtype.names])
        note = f"drop {gone}"
    elif choice == 3:  # reorder the fields (read by name, the order must not matter)
        order = list(rng.permutation(names))
        rows = rows[order].astype([(n, rows.dtype[n].str) for n in order])
        note = f"reorder {order}"
    elif choice == 4:  # change one field's type
        field, dtype = str(rng.choice(names)), str(rng.choice(DTYPES))
        rows, note = _with_field_dtype(rows, field, dtype), f"retype {field}:{dtype}"
    elif choice == 5:  # not a 1-D structured array
        shape = str(rng.choice(["2d", "0d", "plain"]))
        rows = rows.reshape(-1, 1) if shape == "2d" else rows[0] if shape == "0d" else \
            np.stack([rows[n].astype(np.float64) for n in names], axis=1)
        note = f"shape {shape}"
    elif choice == 6:  # Python objects
        out = np.empty(len(rows), object)
        out[:] = [tuple(r) for r in rows.tolist()]
        rows, note = out, "object array"
    else:  # a field holding a subarray
        field = str(rng.choice(names))
        descr = [(n, rows.dtype[n].str, (2,)) if n == field else (n, rows.dtype[n].str) for n in names]
        out = np.zeros(len(rows), descr)
        for n in names:
            out[n] = rows[n][:, None] if n == field else rows[n]
        rows, note = out, f"subarray {field}"
    _save_raw(path, rows)
    return f"dtype {path.name} {note}"


def mutate_rows(rng: np.random.Generator, path: Path) -> str:
    """The rows: dropped, duplicated, shuffled, none, reversed or added at far times."""
    rows = np.load(path)
    choice = int(rng.integers(0, 6))
    if choice == 0:
        keep = np.sort(rng.choice(len(rows), int(rng.integers(0, len(rows))), replace=False))
        rows, note = rows[keep], f"keep {len(keep)} rows"
    elif choice == 1:
        rows, note = np.concatenate([rows, rows[rng.integers(0, len(rows), 5)]]), "duplicate 5 rows"
    elif choice == 2:
        rows, note = rows[rng.permutation(len(rows))], "shuffle"
    elif choice == 3:
        rows, note = rows[:0], "no rows"
    elif choice == 4:
        rows, note = rows[::-1].copy(), "reverse"
    else:
        extra = rows[:3].copy()
        time_field = "ts" if "ts" in rows.dtype.names else "t"
        extra[time_field] = [0, 1, 2**40]
        rows, note = np.concatenate([rows, extra]), "append rows at far times"
    _save_raw(path, rows)
    return f"rows {path.name} {note}"


def mutate_bytes(rng: np.random.Generator, path: Path) -> str:
    """The bytes: truncated, flipped, a lying shape or version, garbage appended, npz, empty or text."""
    raw = bytearray(path.read_bytes())
    rows = np.load(path)
    header_end = raw.index(b"\n") + 1
    choice = int(rng.integers(0, 9))
    if choice == 0:
        cut = int(rng.integers(0, len(raw)))
        raw, note = raw[:cut], f"truncate at {cut}"
    elif choice == 1:
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(0, header_end))] = int(rng.integers(0, 256))
        note = "header bytes"
    elif choice == 2:
        for _ in range(int(rng.integers(1, 6))):
            raw[int(rng.integers(header_end, len(raw)))] = int(rng.integers(0, 256))
        note = "data bytes"
    elif choice == 3:
        count = int(rng.choice([0, len(rows) - 1, len(rows) + 1, 2 * len(rows), 10**9, 10**12, 2**62]))
        header = np.lib.format.header_data_from_array_1_0(rows)
        header["shape"] = (count,)
        handle = io.BytesIO()
        np.lib.format.write_array_header_1_0(handle, header)
        raw, note = bytearray(handle.getvalue()) + raw[header_end:], f"declared rows {count}"
    elif choice == 4:
        raw, note = raw + bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8)), "appended garbage"
    elif choice == 5:
        handle = io.BytesIO()
        key = str(rng.choice(["labels", "arr_0"]))
        np.savez(handle, **{key: rows})
        raw, note = bytearray(handle.getvalue()), f"npz with {key}"
    elif choice == 6:
        raw, note = bytearray(), "empty file"
    elif choice == 7:
        raw, note = bytearray(b"t,x,y,w,h,class_id,class_confidence\n1,2,3,4,5,0,0.5\n"), "csv text"
    else:
        raw[6] = int(rng.choice([2, 3, 9]))
        note = f"format version {raw[6]}"
    path.write_bytes(bytes(raw))
    return f"bytes {path.name} {note}"


def mutate_folder(rng: np.random.Generator, args: list[str], labels: dict[str, Path],
                  predictions: dict[str, Path]) -> tuple[str, str]:
    """A folder mutation and what it must give: refuse or same."""
    name = str(rng.choice(list(predictions)))
    target = predictions[name]
    folder = target.parent
    choice = int(rng.integers(0, 11))
    if choice == 0:
        target.unlink()
        return f"folder: no {target.name}", "refuse"
    if choice == 1:
        labels[name].unlink()
        return f"folder: no label file of {name}", "refuse"
    if choice == 2:
        shutil.copy(target, folder / "other_seq.npy")
        return "folder: extra other_seq.npy", "refuse"
    if choice == 3:
        target.rename(folder / f"{name}_bbox.npy")
        return f"folder: {name}.npy renamed {name}_bbox.npy", "refuse"
    if choice == 4:
        (folder / "20hz").mkdir()
        for path in predictions.values():
            path.rename(folder / "20hz" / path.name)
        return "folder: predictions moved into 20hz/", "refuse"
    if choice == 5:
        target.unlink()
        target.mkdir()
        return f"folder: {target.name} is a folder", "refuse"
    if choice == 6:
        target.unlink()
        os.symlink(target, target)
        return f"folder: {target.name} links to itself", "refuse"
    if choice == 7:
        args[args.index("--predictions") + 1] = str(labels[name].parent)
        return "folder: predictions = the labels' folder", "refuse"
    if choice == 8:
        (folder / "README.txt").write_text("predictions of run 3\n")
        (folder / "notes").mkdir()
        return "folder: a text file and an empty folder beside", "same"
    if choice == 9:
        moved = folder.parent / "stored.npy"
        target.rename(moved)
        os.symlink(moved, target)
        return f"folder: {target.name} a link to the file", "same"
    args[args.index("--labels") + 1] = str(folder)
    return "folder: labels = the predictions folder", "refuse"


def mutate_yaml(rng: np.random.Generator, kind: str, root: Path, names: tuple[str, ...]) -> tuple[str, str]:
    """A mutation of the YAML listing the sequences (dataset.yaml or the DSEC split file) and what it must give."""
    path = root / "labels" / ("dataset.yaml" if kind == "synthetic" else "train_val_test_split.yaml")
    data = yaml.safe_load(path.read_text())
    tests = data["splits"]["test"] if kind == "synthetic" else data["test"]
    choice = int(rng.integers(0, 11))
    expect = "refuse"
    if choice == 0:
        tests.append("missing_seq")
        note = "a listed sequence that is not there"
    elif choice == 1:
        tests.remove(names[0])
        note = "one sequence unlisted (its predictions become extra)"
    elif choice == 2:
        tests[0] = str(rng.choice(["../" + names[0], "/etc", ".", "", "a/b"]))
        note = f"unsafe name {tests[0]!r}"
    elif choice == 3:
        tests[0] = [names[0]] if rng.random() < 0.5 else 17
        note = "a name that is not a string"
    elif choice == 4:
        tests.append(names[0])
        expect, note = "same", "a name listed twice"
    elif choice == 5:
        data["comment"] = "made by hand"
        expect, note = "same", "an unknown extra key"
    elif choice == 6:
        key = str(rng.choice(["splits", "classes", "width", "layout"] if kind == "synthetic" else ["test", "val"]))
        del (data["splits"] if key == "test" and kind == "synthetic" else data)[key]
        note = f"missing {key}"
    elif choice == 7 and kind == "synthetic":
        key, value = [("width", 0), ("width", "128"), ("height", True), ("classes", {"0": "car"}),
                      ("classes", []), ("layout", "coco"), ("splits", ["test"])][int(rng.integers(0, 7))]
        data[key] = value
        note = f"{key} = {value!r}"
    elif choice == 7:
        data["test"] = "zurich_a"
        note = "test is a string"
    else:
        text = {8: "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
                    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
                    for i in range(8)) + "test: *i\ntrain: []\nval: []\nsplits: {test: *i}\n",
                9: "test: [unclosed\n", 10: "\x00\xff\xfe garbage"}[choice]
        path.write_bytes(text.encode("latin-1"))
        return f"yaml {path.name}: {['alias bomb', 'invalid YAML', 'binary garbage'][choice - 8]}", "refuse"
    path.write_text(yaml.safe_dump(data))
    return f"yaml {path.name}: {note}", expect


def build_mutant(kind: str, index: int, seed: int, root: Path) -> tuple[list[str], str, str, dict, dict]:
    """Write mutant `index` of seed `kind` under `root`: its arguments, description, expectation kind
    (refuse / same / reference) and the label and prediction file of each sequence."""
    args, labels, predictions = build_seed(kind, root)
    rng = np.random.default_rng([seed, index, SEEDS.index(kind)])
    family = FAMILIES[int(rng.integers(0, len(FAMILIES)))]
    if family == "yaml" and kind == "gen1":
        family = "folder"
    if family == "folder":
        note, expect = mutate_folder(rng, args, labels, predictions)
        return args, note, expect, labels, predictions
    if family == "yaml":
        note, expect = mutate_yaml(rng, kind, root, NAMES[kind])
        return args, note, expect, labels, predictions
    files = list(labels.values()) + list(predictions.values())
    path = files[int(rng.integers(0, len(files)))]
    mutate = {"value": mutate_value, "dtype": mutate_dtype, "rows": mutate_rows, "bytes": mutate_bytes}[family]
    return args, mutate(rng, path), "reference", labels, predictions


# ----------------------------------------------------------------------------------------------- the oracle


class Invalid(Exception):
    """The oracle's reader rejects a file."""


def reference_rows(path: Path, predictions: bool) -> np.ndarray:
    """BOX rows read by the format's rules, element by element (independent of flexdet's reader)."""
    raw = path.read_bytes()
    if raw[:4] == b"PK\x03\x04":
        with zipfile_member(raw) as member:
            raw = member
    if raw[:6] != b"\x93NUMPY":
        raise Invalid("not npy")
    handle = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(handle)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, _, dtype = reader(handle)
    except (KeyError, ValueError, SyntaxError, EOFError, tokenize.TokenError) as exc:
        raise Invalid(f"header: {exc}") from None
    if len(shape) != 1 or dtype.names is None or dtype.hasobject or dtype.itemsize == 0:
        raise Invalid("not 1-D structured")
    if shape[0] * dtype.itemsize != len(raw) - handle.tell():
        raise Invalid("size")
    rows = np.frombuffer(raw, dtype, shape[0], handle.tell())
    source = {}
    for name in dtype.names:
        canonical = next((c for c, names in ALIASES.items() if name in names), None)
        if canonical is None or canonical in source:
            raise Invalid(f"field {name}")
        source[canonical] = name
    required = ["t", "x", "y", "w", "h", "class_id"] + (["class_confidence"] if predictions else [])
    if any(r not in source for r in required):
        raise Invalid("missing field")
    out = {}
    for canonical, target in TARGETS.items():
        if canonical not in source:
            out[canonical] = [1.0 if canonical == "class_confidence" else 0] * len(rows)
            continue
        field = dtype[source[canonical]]
        if field.kind not in "iufb" or field.shape:
            raise Invalid("field type")
        values = rows[source[canonical]].tolist()
        if target.kind == "f":
            with np.errstate(over="ignore"):
                if not all(math.isfinite(float(np.float32(value))) for value in values):
                    raise Invalid("not a finite float32")
        else:
            info = np.iinfo(target)
            for value in values:
                if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
                    raise Invalid("not integral")
                if not info.min <= int(value) <= info.max:
                    raise Invalid("out of range")
        out[canonical] = values
    boxes = np.zeros(len(rows), TARGETS_DTYPE)
    with _quiet():
        for canonical, values in out.items():
            boxes[canonical] = np.array(values, dtype=np.float64 if TARGETS[canonical].kind == "f" else object
                                        ).astype(TARGETS[canonical])
    return boxes[np.argsort(boxes["t"], kind="stable")]


TARGETS_DTYPE = np.dtype(list(TARGETS.items()))


@contextlib.contextmanager
def zipfile_member(raw: bytes) -> Iterator[bytes]:
    """The bytes of an npz's labels.npy (the oracle reads only what np.savez writes: stored members)."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            info = archive.getinfo("labels.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise Invalid("compressed member")
            yield archive.read(info)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise Invalid(f"npz: {exc}") from None


def expected_report(kind: str, expect: str, clean: dict | None, labels: dict[str, Path],
                    predictions: dict[str, Path]) -> dict | None:
    """The report a correct scorer gives for the mutant (None: it must refuse)."""
    if expect == "refuse":
        return None
    if expect == "same":
        return clean
    from flexdet.datasets.benchmarks import get_benchmark
    from flexdet.evaluation.benchmark_score import score_sequences

    try:
        gt = [reference_rows(path, False) for path in labels.values()]
        dt = [reference_rows(path, True) for path in predictions.values()]
    except (Invalid, OSError):
        return None
    if any(set(np.unique(rows["class_id"]).tolist()) - LABEL_IDS[kind] for rows in gt):
        return None
    benchmark = _synthetic_benchmark() if kind == "synthetic" else get_benchmark(BENCHMARK[kind])
    metrics = score_sequences(benchmark, gt, dt)
    if metrics["ground_truth_boxes"] == 0:
        return None
    return _report(metrics, list(labels), sum(len(rows) for rows in dt))


def _synthetic_benchmark():
    """The synthetic seed's benchmark: its two classes (DSEC ids 0 and 2) at 128x96."""
    import dataclasses

    from flexdet.datasets.benchmarks import get_benchmark

    base = get_benchmark("synthetic", class_names=["pedestrian", "car"], width=128, height=96)
    return dataclasses.replace(base, class_map={0: 0, 2: 1})


def _report(metrics: dict, sequences: list[str], prediction_rows: int) -> dict:
    """The comparable part of a score report."""
    out = {name: None if math.isnan(metrics[name]) else metrics[name]
           for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    out.update(sequences=sequences, instants=metrics["images"], ground_truth_boxes=metrics["ground_truth_boxes"],
               prediction_rows=prediction_rows)
    return out


def run_case(kind: str, index: int, seed: int, clean: dict | None) -> tuple[str, str, int]:
    """Build and score one mutant in this process: (outcome, detail, tracemalloc peak)."""
    from flexdet.cli import main

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        try:
            args, note, expect, labels, predictions = build_mutant(kind, index, seed, root)
        except Exception as exc:  # noqa: BLE001 (a failed mutation is the harness's bug, reported as such)
            return "harness", f"{type(exc).__name__}: {exc}", 0
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        out, err = io.StringIO(), io.StringIO()
        tracemalloc.start()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(args)
        except MemoryError:
            return "memory", note, tracemalloc.get_traced_memory()[1]
        except BaseException as exc:  # noqa: BLE001 (anything but a FlexdetError one-liner is a finding)
            return "traceback", f"{note}: {type(exc).__name__}: {str(exc)[:200]}", 0
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        if peak > memory_bound(size):
            return "memory", f"{note}: peak {peak / 2**20:.1f} MiB", peak
        expected = expected_report(kind, expect, clean, labels, predictions)
        errors = [line for line in err.getvalue().splitlines() if not line.startswith("flexdet score: each")]
        if code == 2:
            if len(errors) != 1 or not errors[0].startswith("flexdet score: error: "):
                return "traceback", f"{note}: stderr {err.getvalue()[:300]!r}", peak
            return ("refused" if expected is None else "over-refused"), f"{note}: {errors[0][:200]}", peak
        if code != 0:
            return "traceback", f"{note}: exit {code}", peak
        got = json.loads(out.getvalue())
        got = {key: got[key] for key in (expected or got) if key in got}
        if expected is None:
            return "wrong", f"{note}: accepted, AP {got.get('AP')}", peak
        if got != expected:
            diff = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
            return "wrong", f"{note}: {str(diff)[:300]}", peak
        return "accepted", note, peak


def clean_report(kind: str) -> dict:
    """The clean seed's report, through flexdet score (a seed that fails is a harness error)."""
    from flexdet.cli import main

    with tempfile.TemporaryDirectory() as folder:
        args, _, _ = build_seed(kind, Path(folder))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            if main(args) != 0:
                raise RuntimeError(f"the clean {kind} seed does not score")
        report = json.loads(out.getvalue())
    return {key: report[key] for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "sequences", "instants",
                                         "ground_truth_boxes", "prediction_rows")}


# ------------------------------------------------------------------------------------------ child processes


def child(cases: list[tuple[str, int]], seed: int, memory_limit: int) -> None:
    """Run cases, one result line each ("S kind index" before, "R kind index outcome peak detail" after)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    clean = {kind: clean_report(kind) for kind in SEEDS}  # warms every import before anything is measured
    for kind, index in cases:
        print(f"S {kind} {index}", flush=True)
        outcome, detail, peak = run_case(kind, index, seed, clean[kind])
        print(f"R {kind} {index} {outcome} {peak} {json.dumps(detail)}", flush=True)


def run(cases: list[tuple[str, int]], seed: int = 0, timeout_s: float = 60.0, first_timeout_s: float = 240.0,
        memory_limit: int = 6 * 2**30) -> dict[tuple[str, int], tuple[str, int, str]]:
    """Every case's (outcome, peak bytes, detail), run in child processes; a child that dies or stops answering
    marks its current case (crash -> traceback, silence -> hang) and the rest go to a new child."""
    results: dict[tuple[str, int], tuple[str, int, str]] = {}

    def on_line(line: str) -> None:
        parts = line.rstrip("\n").split(" ", 5)
        if parts[0] == "R":
            results[(parts[1], int(parts[2]))] = (parts[3], int(parts[4]), json.loads(parts[5]))

    def on_hang(case: tuple[str, int], limit: float) -> None:
        results[case] = ("hang", 0, "no answer")

    def on_crash(case: tuple[str, int], status: int, tail: str) -> None:
        results[case] = ("traceback", 0, f"child died (exit {status})")

    def on_stuck(left: list[tuple[str, int]]) -> None:  # the child died before its first case: the harness's fault
        results.update({case: ("harness", 0, "child failed before its first case") for case in left})

    drive(lambda pending: [sys.executable, __file__, "--child", json.dumps(pending), "--seed", str(seed),
                           "--memory-limit", str(memory_limit)], cases,
          first_timeout_s=first_timeout_s, timeout_s=timeout_s, on_line=on_line, on_hang=on_hang,
          on_crash=on_crash, on_stuck=on_stuck, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return results


def table(results: dict[tuple[str, int], tuple[str, int, str]]) -> str:
    """Markdown table: mutants, accepted, refused, the bad outcomes and the largest peak, per seed and in all."""
    lines = ["| seed | mutants | " + " | ".join(OUTCOMES) + " | peak MiB |", "|---" * (len(OUTCOMES) + 3) + "|"]
    for kind in (*SEEDS, "all"):
        chosen = [r for (k, _), r in results.items() if kind in ("all", k)]
        counts = Counter(outcome for outcome, _, _ in chosen)
        peak = max((p for _, p, _ in chosen), default=0)
        lines.append(f"| {kind} | {len(chosen)} | " + " | ".join(str(counts[o]) for o in OUTCOMES) +
                     f" | {peak / 2**20:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: --mutants N per seed (default 700, 2,100 in all), --seed, --show SEED:INDEX."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=700, help="mutants per seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", help="SEED:INDEX: build that mutant in ./fuzz_score_case and say what it is")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-limit", type=int, default=6 * 2**30, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child([tuple(case) for case in json.loads(args.child)], args.seed, args.memory_limit)
        return 0
    if args.show:
        kind, index = args.show.split(":")
        target = Path("fuzz_score_case")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        command, note, expect, _, _ = build_mutant(kind, int(index), args.seed, target)
        print(f"{note} (expect {expect}): flexdet {' '.join(command)}")
        return 0
    start = time.time()
    results = run([(kind, i) for i in range(args.mutants) for kind in SEEDS], args.seed)
    print(table(results))
    print(f"{len(results)} mutants in {time.time() - start:.0f} s; memory bound 64 MiB + 50 x input bytes")
    bad = sorted((case, r) for case, r in results.items() if r[0] in BAD_OUTCOMES)
    for (kind, index), (outcome, _, detail) in bad[:40]:
        print(f"{outcome:12s} {kind}:{index} {detail}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
