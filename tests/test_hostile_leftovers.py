"""Issue "Results nobody can fool" (#26), the last code items: a model.pt whose own input specification asks for a
sensor no camera has is refused at load; the three .npy header checks are one; `flexdet score --coco-out` is
checked before scoring and writes COCO files only on success.

Loads that could allocate without bound run in a child under RLIMIT_AS, so a blow-up fails the test instead of
taking the machine's memory.
"""

from __future__ import annotations

import io
import json
import stat
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from flexdet.cli import main
from flexdet.data.boxes import FILE_BOX_DTYPE
from flexdet.errors import CheckpointError, FormatError

GEN1_DTYPE = np.dtype([("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1"),
                       ("confidence", "<f4"), ("track_id", "<u4")])


def run_child(code: str, memory_mib: int) -> subprocess.CompletedProcess:
    """`code` in a fresh Python that may map at most `memory_mib` MiB more than it holds after importing torch and
    the readers (torch's CUDA build maps gigabytes of address space on import)."""
    prelude = ("import resource, torch, flexdet.models.checkpoint, flexdet.data.readers, flexdet.data.labels\n"
               "size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024\n"
               f"resource.setrlimit(resource.RLIMIT_AS, (size + {memory_mib * 2**20},) * 2)\n"
               "from flexdet.errors import FlexdetError\n"
               "try:\n")
    body = textwrap.indent(textwrap.dedent(code).strip(), "    ")
    tail = "\nexcept FlexdetError as exc:\n    print(type(exc).__name__ + ':', exc)\n"
    return subprocess.run([sys.executable, "-c", prelude + body + tail], capture_output=True, text=True, timeout=300)


# -- 3. a model.pt's own input specification is bounded by what a real sensor needs -------------------------


def _model_pt(path: Path, height: int, width: int, bins: int | None = None) -> Path:
    from flexdet.data.input_spec import identity_spec
    from flexdet.models import build_model
    from flexdet.models.checkpoint import save_model

    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=False).eval()
    return save_model(path, model, identity_spec(height, width, bins=bins or model.config.in_channels // 2))


def test_a_model_pt_whose_own_input_spec_is_200000_px_a_side_is_refused_at_load(tmp_path):
    from flexdet.data.input_spec import identity_spec
    from flexdet.models.checkpoint import load_model

    huge = _model_pt(tmp_path / "huge" / "model.pt", 200_000, 200_000)
    with pytest.raises(CheckpointError, match=r"input\.geometry\.sensor_width = 200000 is past 8192 px") as info:
        load_model(huge)
    assert str(huge) in str(info.value) and "\n" not in str(info.value)
    # The runtime (no export copies to contradict the file) refuses it before allocating 160 GB of state.
    result = run_child(f"""
        from flexdet.export.runtime.loader import load_runtime
        load_runtime({str(huge)!r}, backend="torch")
        print("LOADED")
        """, memory_mib=1024)
    assert "CheckpointError:" in result.stdout and "input.geometry.sensor_width" in result.stdout, \
        (result.stdout, result.stderr[-800:])
    # A step input past 2**31 values (here 200 bins a polarity at 4096x4096) is refused naming the bins.
    with pytest.raises(CheckpointError, match=r"input\.bins = 200 \(stacked_histogram\) at 4096x4096"):
        load_model(_model_pt(tmp_path / "bins" / "model.pt", 4096, 4096, bins=200))
    # The bound is in bytes: float32 voxel grids reach it at a quarter of the channels (8 bins at 8192x8192: 2 GiB).
    identity_spec(8192, 8192, representation="voxel_grid", bins=8).check_size("voxel")
    with pytest.raises(CheckpointError, match=r"voxel: input\.bins = 9 \(voxel_grid\) at 8192x8192 makes a step"):
        identity_spec(8192, 8192, representation="voxel_grid", bins=9).check_size("voxel")
    # Real sensors, and a generous margin above them, load: 1280x720 (the largest event sensors), 8192 x 8192.
    for height, width in ((720, 1280), (8192, 8192)):
        loaded = load_model(_model_pt(tmp_path / f"{width}" / "model.pt", height, width))
        assert loaded.spec.sensor_size == (width, height)



def test_an_export_without_model_pt_whose_copies_agree_on_200000_px_is_refused_at_load(tmp_path):
    """metadata.json and model.onnx both saying 200000x200000 (no model.pt to load): bounded as model.pt is."""
    import onnx

    from flexdet.export.metadata import METADATA_KEY
    from flexdet.export.runtime.loader import load_runtime

    folder = tmp_path / "export"
    assert main(["export", "--preset", "nano", "--height", "48", "--width", "64", "--out", str(folder)]) == 0
    (folder / "model.pt").unlink()
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["input"]["geometry"]["sensor_width"] = metadata["input"]["geometry"]["sensor_height"] = 200_000
    (folder / "metadata.json").write_text(json.dumps(metadata))
    graph = onnx.load(str(folder / "model.onnx"))
    [entry] = [prop for prop in graph.metadata_props if prop.key == METADATA_KEY]
    entry.value = json.dumps(metadata)
    onnx.save(graph, str(folder / "model.onnx"))
    with pytest.raises(CheckpointError, match=r"input\.geometry\.sensor_width = 200000 is past 8192 px") as info:
        load_runtime(folder, backend="onnxruntime")
    assert "\n" not in str(info.value)


# -- 4. one .npy header check for the RVT arrays, the label files and the npz event members -----------------


def _npy_bytes(shape: tuple[int, ...], body: bytes) -> bytes:
    """An .npy (version 1.0) of int64 values whose header declares `shape`, followed by `body`."""
    handle = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.int64))
    header["shape"] = shape
    np.lib.format.write_array_header_1_0(handle, header)
    return handle.getvalue() + body


def _three_readers(tmp_path: Path, member: bytes) -> dict[str, tuple[Path, object]]:
    """The same .npy bytes as an RVT array (load_npy), a label file (read_boxes) and an npz event member (t.npy
    of read_events): reader name -> (file, call)."""
    from flexdet.data import read_events
    from flexdet.data.labels import read_boxes
    from flexdet.data.readers.npy import load_npy

    (tmp_path / "timestamps_us.npy").write_bytes(member)
    (tmp_path / "seq_bbox.npy").write_bytes(member)
    with zipfile.ZipFile(tmp_path / "events.npz", "w") as archive:
        archive.writestr("t.npy", member)
        for name in ("x", "y", "p"):
            archive.writestr(f"{name}.npy", _npy_bytes((1,), b"\0" * 8))
    return {"load_npy": (tmp_path / "timestamps_us.npy", load_npy),
            "read_boxes": (tmp_path / "seq_bbox.npy", read_boxes),
            "read_events": (tmp_path / "events.npz", read_events)}


def test_the_three_npy_readers_refuse_a_lying_header_with_one_check(tmp_path):
    # 10**12 values declared, 64 bytes held: each reader refuses it with the one check's words.
    for name, (path, call) in _three_readers(tmp_path, _npy_bytes((10**12,), b"\0" * 64)).items():
        with pytest.raises(FormatError, match=r"header declares 1000000000000 values \(shape \(1000000000000,\), "
                                              r"int64: 8000000000000 bytes\) but the file holds 64 bytes") as info:
            call(path)
        assert str(path) in str(info.value), name
    # An object dtype is "Python objects" in all three (the label reader said "a 1-D structured array" before).
    header = {"descr": "|O", "fortran_order": False, "shape": (1,)}
    handle = io.BytesIO()
    np.lib.format.write_array_header_1_0(handle, header)
    for path, call in _three_readers(tmp_path, handle.getvalue() + b"\0" * 8).values():
        with pytest.raises(FormatError, match="holds Python objects"):
            call(path)


def test_an_npz_member_declaring_a_4_gb_npy_header_is_refused_without_reading_it(tmp_path):
    # A 2.0 header whose length field says 4 GB, in a member of 768 MB of zeros deflated to under 1 MB: the npz
    # reader's own header check used to read (and decode) the whole member looking for the header's end.
    path = tmp_path / "events.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("t.npy", "w", force_zip64=True) as member:
            member.write(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 16))
            chunk = b"\0" * 2**24
            for _ in range(48):
                member.write(chunk)
        for name in ("x", "y", "p"):
            archive.writestr(f"{name}.npy", _npy_bytes((1,), b"\0" * 8))
    assert path.stat().st_size < 2**20
    result = run_child(f"""
        from flexdet.data import read_events
        read_events({str(path)!r})
        """, memory_mib=256)
    assert "FormatError:" in result.stdout and "member 't.npy': not an .npy header" in result.stdout, \
        (result.stdout, result.stderr[-800:])


# -- 5. score --coco-out: checked before scoring, COCO files written only on success ------------------------


def _gen1_case(tmp_path: Path, box_size: float = 40) -> tuple[Path, Path]:
    """A Gen1 root (test/<name>_bbox.npy) and its predictions folder, boxes `box_size` px wide."""
    labels, predictions = tmp_path / "gen1" / "test", tmp_path / "predictions"
    labels.mkdir(parents=True)
    predictions.mkdir()
    rng = np.random.default_rng(0)
    for name in ("seq_a", "seq_b"):
        rows = np.zeros(12, GEN1_DTYPE)
        rows["ts"] = np.repeat(600_000 + 50_000 * np.arange(4), 3)
        rows["x"], rows["y"] = rng.uniform(0, 200, 12), rng.uniform(0, 150, 12)
        rows["w"] = rows["h"] = box_size
        rows["class_id"], rows["confidence"] = rng.integers(0, 2, 12), 1
        np.save(labels / f"{name}_bbox.npy", rows)
        found = np.zeros(12, FILE_BOX_DTYPE)
        found["t"] = rows["ts"]
        for field in ("x", "y", "w", "h", "class_id"):
            found[field] = rows[field]
        found["x"] += 3
        found["class_confidence"] = rng.uniform(0.1, 1, 12)
        np.save(predictions / f"{name}.npy", found)
    return labels.parent, predictions


def _score(capsys, labels: Path, predictions: Path, coco: Path) -> tuple[int, str, str]:
    code = main(["score", "--benchmark", "gen1", "--labels", str(labels), "--predictions", str(predictions),
                 "--coco-out", str(coco)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, out: str, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not out, out  # refused before scoring: no metrics printed
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_score_refuses_an_unusable_coco_out_before_scoring(tmp_path, capsys):
    labels, predictions = _gen1_case(tmp_path)
    existing = tmp_path / "a_file"
    existing.write_text("keep me\n")
    code, out, err = _score(capsys, labels, predictions, existing)
    _one_line_error(code, out, err, "--coco-out", str(existing), "not a folder")
    assert existing.read_text() == "keep me\n"
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, out, err = _score(capsys, labels, predictions, locked / "coco")
        _one_line_error(code, out, err, "--coco-out", "not writable")
        assert not (locked / "coco").exists()
    finally:
        locked.chmod(stat.S_IRWXU)


def test_score_writes_coco_files_only_when_it_succeeds(tmp_path, capsys):
    labels, predictions = _gen1_case(tmp_path, box_size=12)  # every box under Gen1's 30 px diagonal
    coco = tmp_path / "coco"
    code, out, err = _score(capsys, labels, predictions, coco)
    assert code == 2 and "no ground-truth box" in err, err
    assert not coco.exists(), sorted(p.name for p in coco.rglob("*"))
    coco.mkdir()
    code, out, err = _score(capsys, labels, predictions, coco)
    assert code == 2 and sorted(coco.iterdir()) == [], sorted(p.name for p in coco.iterdir())
    labels, predictions = _gen1_case(tmp_path / "good")
    code, out, err = _score(capsys, labels, predictions, coco)
    assert code == 0, err
    assert sorted(p.name for p in coco.iterdir()) == ["ground_truth.json", "results.json"]  # no staging left
    dataset = json.loads((coco / "ground_truth.json").read_text())
    assert len(dataset["images"]) == 8 and len(dataset["annotations"]) == 24
    assert len(json.loads((coco / "results.json").read_text())) == 24
