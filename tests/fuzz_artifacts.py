"""Mutation fuzzing of the artefacts flexdet loads: RVT and FlexEvent checkpoints (`flexdet convert`), flexdet
model.pt files (`load_model`) and export folders (`load_runtime`).

Every case takes a real small artefact and mutates it deterministically from (kind, index, seed): byte flips
(in the pickle, the zip headers or anywhere), truncations, pickle opcode edits, injected calls to os.system /
exec / subprocess (a canary file tells whether any ran), storage sizes declared huge, stride-0 views, members
compressed into zip bombs, NaN / inf weights, wrong shapes / dtypes / types / keys, hostile config values,
and for export folders edited metadata.json fields and ONNX entries. Cases run in child processes (one per
batch) with a per-case timeout; each ends in one outcome:

  refused         a FlexdetError with a one-line message naming the file
  equal           accepted; the model / specification / classes equal the clean artefact's
  changed         accepted and different, where the mutation changed what the file says (tensor values,
                  config values): the loader followed the file
  wrong           accepted and different although the file says the same (a silently wrong result)
  bad-message     a FlexdetError whose message spans lines or does not name the file
  traceback       any other exception
  code-executed   the canary file appeared
  memory          peak RSS growth while loading (VmHWM reset before each case) above BOUND_FACTOR x the clean
                  artefact's growth (the larger of two loads) + BOUND_SLACK_MB
  crash / hang    the child died / no answer within the timeout

    OMP_NUM_THREADS=1 python tests/fuzz_artifacts.py --kinds rvt,model,export --count 2000 --jobs 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickletools
import random
import struct
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

from fuzz_driver import drive

KINDS = ("rvt", "flexevent", "model", "export")
OUTCOMES = ("refused", "equal", "changed", "wrong", "bad-message", "traceback", "code-executed", "memory",
            "crash", "hang")
BAD_OUTCOMES = ("wrong", "bad-message", "traceback", "code-executed", "memory", "crash", "hang")
BOUND_FACTOR, BOUND_SLACK_MB = 1.5, 64.0
ROOT = Path(__file__).resolve().parents[1]
RVT_CKPT = ROOT / ".." / "shared" / "data" / "peers" / "rvt" / "rvt_random.ckpt"
FLEXEVENT_IO = ROOT / "tests" / "fixtures" / "flexevent" / "flexevent_2class_io.npz"
# The small FlexEvent checkpoint's widths: RVT-T's event branch (embed_dim 32, the smallest size the converter
# takes), frame FPN and YOLOX head 16 channels wide. The frame branch stays detectron2's ResNet-50 at its own
# widths (flexdet builds torchvision's ResNet-50, whose widths are fixed): 112 MB of the file, against 183 MB.
FLEXEVENT_FPN_WIDTH, FLEXEVENT_HEAD_WIDTH = 16, 16
DANGEROUS = [("os", "system"), ("posix", "system"), ("subprocess", "check_call"), ("builtins", "exec"),
             ("builtins", "eval"), ("builtins", "__import__"), ("nt", "system"), ("torch", "load"),
             ("numpy", "load"), ("shutil", "rmtree"), ("flexdet.models.safe_unpickle", "ForeignObject"),
             ("torch.serialization", "load"), ("pickle", "loads"), ("builtins", "getattr"),
             ("omegaconf.dictconfig", "DictConfig"), ("torch._utils", "_rebuild_tensor_v2")]


# ------------------------------------------------------------------------------------------ clean artefacts


def clean_artifact(kind: str, folder: Path) -> Path:
    """The clean artefact of `kind` in `folder` (made once): a file for checkpoints, a folder for exports."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "rvt":
        path = folder / "rvt.ckpt"
        if not path.is_file():
            from flexdet.models.safe_unpickle import load_foreign_checkpoint, to_plain

            payload = load_foreign_checkpoint(RVT_CKPT)
            config = {"model": {"backbone": {"partition_split_32": 1}, "postprocess": {
                "confidence_threshold": 0.1, "nms_threshold": 0.45}}, "dataset": {"name": "gen1"}}
            hyper = to_plain(payload.get("hyper_parameters") or {})
            torch.save({"state_dict": dict(payload["state_dict"]), "epoch": 3,
                        "hyper_parameters": {"full_config": config, "stored": hyper}}, path)
        return path
    if kind == "flexevent":
        path = folder / "flexevent.pth"
        if not path.is_file():
            torch.save(small_flexevent_weights(), path)
        return path
    model_pt = folder / "model.pt"
    if not model_pt.is_file():
        from flexdet.data.input_spec import identity_spec
        from flexdet.models import build_model
        from flexdet.models.checkpoint import save_model

        torch.manual_seed(0)
        model = build_model("nano", num_classes=2, use_frames=False).eval()
        save_model(model_pt, model, identity_spec(48, 64, bins=model.config.bins), ["car", "person"])
    if kind == "model":
        return model_pt
    export = folder / "export"
    if not (export / "metadata.json").is_file():
        from flexdet.cli import main

        assert main(["export", str(model_pt), "--out", str(export)]) == 0
    return export


def small_flexevent_weights() -> dict:
    """A FlexEvent 2-class checkpoint as its release writes it (scripts/export_weights.py: a flat {"mdl." key:
    tensor} dict, float32 weights, int64 num_batches_tracked, the official keys in the official order), at
    the smallest widths flexdet converts: `small_flexevent_shapes`. Values are the fixture's seeded draws
    (tests/fixtures/flexevent/make_flexevent_fixture.py), so every run writes the same file."""
    import importlib.util

    import numpy as np
    import torch

    spec = importlib.util.spec_from_file_location("fixture", FLEXEVENT_IO.parent / "make_flexevent_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = np.load(FLEXEVENT_IO)
    keys = [str(k) for k in data["keys"]]
    shapes = [tuple(int(n) for n in s.split(",")) if s else () for s in data["shapes"]]
    dists = [(str(kind), *params) for kind, params in zip(data["dist_kind"], data["dist_params"])]
    small = [small_flexevent_shape(key, shape) for key, shape in zip(keys, shapes)]
    weights = module.generated_weights(keys, small, dists, module.SEED)
    return {key: torch.from_numpy(weights[key]) for key in keys}


def small_flexevent_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of FlexEvent-B tensor `key` (official `shape`) in the small model: RVT-B -> RVT-T halves every
    width of the event branch and its PAFPN (multiples of 64: 64 -> 32 ... 2048 -> 1024; 20 input channels,
    kernels and the gates' 2 experts stay), the frame FPN and the head go to 16 channels, ResNet-50 is kept."""
    import re

    name = key[len("mdl."):]
    if name.startswith("rgb_backbone.bottom_up."):
        return shape
    if match := re.match(r"rgb_backbone\.fpn_(lateral|output)\d\.(weight|bias)$", name):
        if match.group(2) == "bias":
            return (FLEXEVENT_FPN_WIDTH,)
        if match.group(1) == "lateral":
            return (FLEXEVENT_FPN_WIDTH, shape[1], 1, 1)
        return (FLEXEVENT_FPN_WIDTH, FLEXEVENT_FPN_WIDTH, 3, 3)
    if name.startswith("yolox_head.stems.") and name.endswith(".conv.weight"):  # PAFPN level -> head width
        return (FLEXEVENT_HEAD_WIDTH, shape[1] // 2, 1, 1)
    if name.startswith("yolox_head."):
        return tuple(FLEXEVENT_HEAD_WIDTH if n == 128 else n for n in shape)
    half = tuple(n // 2 if n % 64 == 0 else n for n in shape)
    if name.endswith(".embedder.weight"):  # frame FPN level -> stage width
        return (half[0], FLEXEVENT_FPN_WIDTH, 1, 1)
    return half


# ------------------------------------------------------------------------------------------------ mutations


def _zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _zip(members: dict[str, bytes], compressed: set[str] = frozenset()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), content,
                             zipfile.ZIP_DEFLATED if name in compressed else zipfile.ZIP_STORED)
    return buffer.getvalue()


def _pickle_name(members: dict[str, bytes]) -> str:
    return next(name for name in members if name.endswith("/data.pkl"))


def _flip(data: bytes, rng: random.Random, start: int = 0, stop: int | None = None) -> bytes:
    out = bytearray(data)
    stop = len(out) if stop is None else stop
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(start, max(start + 1, stop))
        out[position] = rng.choice([out[position] ^ (1 << rng.randrange(8)), rng.randrange(256), 0, 0xFF])
    return bytes(out)


def _inject(pickled: bytes, module: str, name: str, canary: str) -> bytes:
    """`module.name(<payload writing the canary>)` called just before STOP (result popped, so the top object
    stays the checkpoint dict)."""
    arg = (f"open({canary!r}, 'w').write('x')" if name in ("exec", "eval") else f"touch {canary}")
    call = b"c" + module.encode() + b"\n" + name.encode() + b"\n(X" + struct.pack("<I", len(arg)) + arg.encode() + \
        b"tR0"
    return pickled[:-1] + call + pickled[-1:]


def _opcode_edit(pickled: bytes, rng: random.Random, canary: str) -> tuple[bytes, str]:
    ops = list(pickletools.genops(pickled))
    index = rng.randrange(len(ops) - 1)
    op, arg, position = ops[index]
    end = ops[index + 1][2]
    action = rng.choice(["delete", "duplicate", "opcode", "global", "int", "int"])
    if action == "global" or (action == "int" and op.name not in ("BININT", "BININT1", "BININT2", "LONG1")):
        globals_ = [(p, e) for (o, _, p), (_, _, e) in zip(ops, [*ops[1:], ops[-1]]) if o.name == "GLOBAL"]
        if not globals_:
            return pickled[:position] + pickled[end:], "pickle-delete"
        start, stop = rng.choice(globals_)
        module, name = rng.choice(DANGEROUS)
        return pickled[:start] + f"c{module}\n{name}\n".encode() + pickled[stop:], f"pickle-global {module}.{name}"
    if action == "int":
        value = rng.choice([0, -1, 2**31 - 1, 2**40, 10**12, -(2**63), 2**64 + 3])
        encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return pickled[:position] + b"\x8a" + bytes([len(encoded)]) + encoded + pickled[end:], f"pickle-int {value}"
    if action == "delete":
        return pickled[:position] + pickled[end:], f"pickle-delete {op.name}"
    if action == "duplicate":
        return pickled[:end] + pickled[position:end] + pickled[end:], f"pickle-duplicate {op.name}"
    return pickled[:position] + bytes([rng.randrange(256)]) + pickled[position + 1:], f"pickle-opcode {op.name}"


def _zip_mutation(data: bytes, rng: random.Random, canary: str) -> tuple[bytes, str, bool]:
    """A mutation of a torch zip: (bytes, name, whether it may change what the file says)."""
    members = _zip_members(data)
    name = _pickle_name(members)
    choice = rng.choice(["flip-pickle", "flip-headers", "flip-any", "truncate", "opcode", "opcode", "inject",
                         "bomb", "forge-size"])
    if choice == "flip-pickle":
        return _zip({**members, name: _flip(members[name], rng)}), choice, True
    if choice == "flip-headers":
        directory = data.rfind(b"PK\x01\x02")
        return _flip(data, rng, max(0, directory - 2000), len(data)), choice, True
    if choice == "flip-any":
        return _flip(data, rng), choice, True
    if choice == "truncate":
        return data[:rng.randrange(len(data))], choice, True
    if choice == "opcode":
        pickled, what = _opcode_edit(members[name], rng, canary)
        return _zip({**members, name: pickled}), what, True
    if choice == "inject":
        module, function = rng.choice(DANGEROUS[:6])
        return _zip({**members, name: _inject(members[name], module, function, canary)}), \
            f"inject {module}.{function}", False
    storages = [key for key in members if "/data/" in key]
    target = rng.choice(storages)
    if choice == "bomb":  # a storage (or the pickle) replaced by 256 MiB of zeros deflated to ~250 KB
        victim = rng.choice([target, name])
        return _zip({**members, victim: b"\0" * (256 << 20)}, {victim}), f"bomb {victim}", True
    return _forge_size(_zip(members), target, rng.choice([2**32 - 1, 2**31, len(data) + 1])), "forge-size", True


def _forge_size(blob: bytes, member: str, size: int) -> bytes:
    """`blob` (a zip) with `member`'s uncompressed size in the central directory set to `size`."""
    out = bytearray(blob)
    end = out.rfind(b"PK\x05\x06")
    count, _, offset = struct.unpack_from("<HII", out, end + 10)
    for _ in range(count):
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", out, offset + 28)
        if out[offset + 46:offset + 46 + name_length].decode() == member:
            struct.pack_into("<I", out, offset + 24, size)
        offset += 46 + name_length + extra_length + comment_length
    return bytes(out)


def _payload_mutation(kind: str, payload: dict, rng: random.Random) -> tuple[dict, str, bool]:
    """A mutation of a checkpoint's contents, re-saved with torch.save: (payload, name, may change)."""
    import copy

    import torch

    payload = copy.copy(payload)
    state_key = "state_dict" if "state_dict" in payload else None
    state = dict(payload[state_key]) if state_key else dict(payload)
    keys = sorted(k for k in state if isinstance(state[k], torch.Tensor))
    key = rng.choice(keys)
    tensor = state[key]
    choice = rng.choice(["nan", "inf", "stride0", "shape", "dtype", "type", "key", "config", "config", "scale"])
    changed = True
    if choice == "nan" and tensor.is_floating_point() and tensor.numel():
        value = tensor.clone()
        value.view(-1)[rng.randrange(value.numel()) if rng.random() < 0.5 else slice(None)] = float("nan")
        state[key] = value
    elif choice == "inf" and tensor.is_floating_point() and tensor.numel():
        value = tensor.clone()
        value.view(-1)[rng.randrange(value.numel())] = rng.choice([float("inf"), -float("inf")])
        state[key] = value
    elif choice == "scale":
        state[key] = tensor * rng.choice([0, -1, 1e3])
    elif choice == "stride0":
        state[key] = torch.zeros(1, dtype=tensor.dtype).expand(rng.choice([10**6, 10**8, 2**31, 10**10]))
    elif choice == "shape":
        shape = list(tensor.shape) or [1]
        shape[rng.randrange(len(shape))] = rng.choice([0, 1, 3, 7, 4096])
        state[key] = torch.zeros(rng.choice([shape, [tensor.numel()], [], [2, 2, 2, 2, 2]]), dtype=tensor.dtype)
    elif choice == "dtype":
        state[key] = tensor.to(rng.choice([torch.int64, torch.float16, torch.bool, torch.complex64, torch.uint8]))
    elif choice == "type":
        state[key] = rng.choice([None, 3, "weights", [1.0, 2.0], {"a": tensor}, (tensor,)])
    elif choice == "key":
        del state[key]
        action = rng.choice(["drop", "int", "tuple", "rename"])
        if action != "drop":
            state[{"int": 7, "tuple": ("a", 1), "rename": key + ".extra"}[action]] = tensor
    else:
        return _config_mutation(kind, payload, rng, state_key, state)
    if state_key:
        payload[state_key] = state
        return payload, f"{choice} {key}", changed
    return state, f"{choice} {key}", changed


def _config_mutation(kind: str, payload: dict, rng: random.Random, state_key: str | None,
                     state: dict) -> tuple[dict, str, bool]:
    """Hostile values in the stored configuration (RVT's hyper-parameters, model.pt's model_config / input)."""
    import copy

    values = [None, -1, 0, 10**6, 2**63, float("nan"), float("inf"), 1e-9, "x", [1, 2], {"a": 1}, True, 3.5]
    payload = copy.deepcopy(payload) if kind != "flexevent" else payload
    if kind == "rvt":
        config = payload["hyper_parameters"]["full_config"]
        path = rng.choice([("model", "backbone", "partition_split_32"), ("model", "postprocess", "confidence_threshold"),
                           ("model", "postprocess", "nms_threshold"), ("model", "backbone", "stage", "attention",
                                                                       "dim_head"), ("dataset", "name"), ("model",)])
        target = config
        for part in path[:-1]:
            target = target.setdefault(part, {})
        value = rng.choice(values + ["gen4", "gen1"])
        if rng.random() < 0.1:
            value = {}
            value["self"] = value  # a cycle
        target[path[-1]] = value
        return payload, f"config {'.'.join(path)}={value!r:.40}", True
    if kind == "flexevent":
        state["epoch"] = rng.choice(values)
        return state, "extra non-tensor entry", True
    section = rng.choice(["model_config", "input", "classes", "format"])
    if section in ("model_config", "input"):
        tree = payload[section]
        if section == "input" and rng.random() < 0.5:
            tree = tree["geometry"]
        field = rng.choice(sorted(tree))
        tree[field] = rng.choice(values + [[4096, 8192, 16384, 32768], 200_000])
        return payload, f"{section}.{field}={tree[field]!r:.40}", True
    payload[section] = rng.choice(values + [["a"] * 3, [1, 2]])
    return payload, f"{section}={payload[section]!r:.40}", True


def _export_mutation(folder: Path, out: Path, rng: random.Random, canary: str, model_payload: dict) -> tuple[str, bool]:
    """Copy the export `folder` to `out` with one file mutated; (name, may change)."""
    import shutil

    shutil.copytree(folder, out)
    target = rng.choice(["metadata.json", "metadata.json", "model.onnx", "model.pt", "model.pt"])
    if target == "metadata.json":
        text = (out / target).read_text()
        choice = rng.choice(["field", "field", "flip", "truncate"])
        if choice == "field":
            data = json.loads(text)
            tree = data["input"] if rng.random() < 0.6 else data
            if rng.random() < 0.4 and "geometry" in tree:
                tree = tree["geometry"]
            field = rng.choice(sorted(tree))
            tree[field] = rng.choice([None, -1, 0, 1000, 200_000, 10**12, 1.5, "x", [1], {}, True])
            (out / target).write_text(json.dumps(data))
            return f"metadata.json {field}={tree[field]!r}", True
        data = text.encode()
        (out / target).write_bytes(_flip(data, rng) if choice == "flip" else data[:rng.randrange(len(data))])
        return f"metadata.json {choice}", True
    if target == "model.onnx":
        data = (out / target).read_bytes()
        choice = rng.choice(["flip", "truncate", "metadata"])
        if choice == "metadata":
            import onnx

            proto = onnx.load(str(out / target))
            entry = next(p for p in proto.metadata_props if p.key == "flexdet")
            meta = json.loads(entry.value)
            field = rng.choice(sorted(meta["input"]))
            meta["input"][field] = rng.choice([None, -1, 0, 1000, 10**12, "x", [1]])
            entry.value = json.dumps(meta)
            onnx.save(proto, str(out / target))
            return f"model.onnx metadata input.{field}", True
        (out / target).write_bytes(_flip(data, rng) if choice == "flip" else data[:rng.randrange(len(data))])
        return f"model.onnx {choice}", True
    name, changed = _checkpoint_mutant("model", (out / target).read_bytes(), model_payload, out / target, rng, canary)
    return f"model.pt {name}", changed


def _checkpoint_mutant(kind: str, data: bytes, payload: dict, path: Path, rng: random.Random,
                       canary: str) -> tuple[str, bool]:
    import torch

    if rng.random() < 0.55:
        mutated, name, changed = _zip_mutation(data, rng, canary)
        path.write_bytes(mutated)
        return name, changed
    mutated_payload, name, changed = _payload_mutation(kind, payload, rng)
    torch.save(mutated_payload, path)
    return name, changed


# ---------------------------------------------------------------------------------------------------- oracle


def _load(kind: str, path: Path):
    """What flexdet makes of the artefact: (state dict, plain description) to compare."""
    from flexdet.config import to_dict

    if kind in ("rvt", "flexevent"):
        from flexdet.convert import convert_checkpoint

        converted, spec = convert_checkpoint(path)
        return converted.model.state_dict(), {"config": to_dict(converted.model.config), "spec": to_dict(spec),
                                              "classes": converted.class_names}
    if kind == "model":
        from flexdet.models.checkpoint import load_model

        loaded = load_model(path)
        return loaded.model.state_dict(), {"config": to_dict(loaded.model.config), "spec": to_dict(loaded.spec),
                                           "classes": loaded.classes}
    from flexdet.export.runtime.loader import load_runtime

    runtime = load_runtime(path, backend="onnxruntime")
    artifacts = __import__("flexdet.export.runtime.loader", fromlist=["x"]).resolve_artifacts(path)
    metadata = {k: v for k, v in to_dict(runtime.metadata).items() if k != "flexdet_version"}
    runtime.close() if hasattr(runtime, "close") else None
    return artifacts.model.state_dict(), metadata


def _same(a, b) -> bool:
    import torch

    state_a, plain_a = a
    state_b, plain_b = b
    if plain_a != plain_b or state_a.keys() != state_b.keys():
        return False
    return all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _child(kind: str, indices: list[int], seed: int, folder: str) -> None:
    """Run cases in this process; 'S kind i' before each, 'R kind i outcome json' after."""
    import torch

    from flexdet.errors import FlexdetError

    torch.set_num_threads(1)
    work = Path(folder)
    clean = clean_artifact(kind, work / "clean")
    canary = str(work / "CANARY")
    legit = 0.0
    for _ in range(2):  # the second load sees the heap as the mutants do (imports done, allocator warm)
        _reset_peak()
        base = _peak_rss_mb()
        reference = _load(kind, clean)
        legit = max(legit, _peak_rss_mb() - base)
    model_file = clean / "model.pt" if kind == "export" else clean
    payload = torch.load(model_file, weights_only=True)
    data = model_file.read_bytes()
    for index in indices:
        print(f"S {kind} {index}", flush=True)
        rng = random.Random(f"{kind}:{index}:{seed}")
        case = work / f"case-{index}"
        try:
            if kind == "export":
                name, may_change = _export_mutation(clean, case, rng, canary, payload)
            else:
                case = case.with_suffix(clean.suffix)
                name, may_change = _checkpoint_mutant(kind, data, payload, case, rng, canary)
        except Exception as exc:  # a bug of this script: reported, not counted against flexdet
            print(f"R {kind} {index} harness {json.dumps([repr(exc)[:200], 0, 0])}", flush=True)
            continue
        _reset_peak()
        base = _peak_rss_mb()
        started = time.perf_counter()
        try:
            got = _load(kind, case)
            outcome = "equal" if _same(got, reference) else ("changed" if may_change else "wrong")
            detail = name
        except FlexdetError as exc:
            message = str(exc)
            named = str(case) in message or case.name in message
            outcome = "refused" if "\n" not in message and named else "bad-message"
            detail = f"{name} -> {message.replace(str(work), '')[:200]}"
        except BaseException as exc:  # the oracle's point: anything else is a traceback
            outcome, detail = "traceback", f"{name} -> {type(exc).__name__}: {str(exc)[:200]}"
        peak = _peak_rss_mb() - base
        if os.path.exists(canary):
            outcome, detail = "code-executed", name
            os.unlink(canary)
        elif peak > BOUND_FACTOR * legit + BOUND_SLACK_MB:
            outcome = "memory"
        elapsed = time.perf_counter() - started
        print(f"R {kind} {index} {outcome} {json.dumps([detail, round(peak, 1), round(elapsed, 2)])}", flush=True)
        if case.is_dir():
            __import__("shutil").rmtree(case)
        else:
            case.unlink(missing_ok=True)
    print(f"L {kind} {round(legit, 1)}", flush=True)


def run(kind: str, indices: list[int], seed: int = 0, timeout_s: float = 120.0, first_timeout_s: float = 600.0,
        batch: int = 500, folder: str | None = None, log=None) -> dict[int, tuple[str, list]]:
    """Outcome of every case of `kind`, run by child processes of at most `batch` cases; a crash or a hang ends
    the child, is recorded for its case, and a fresh child continues after it. Returns {index: (outcome,
    [detail, peak RSS MB, seconds])} plus {-1: ("legit", [peak RSS MB of the clean artefact])}."""
    work = folder or tempfile.mkdtemp(prefix=f"fuzz-{kind}-")  # a folder of its own is removed at the end
    results: dict[int, tuple[str, list]] = {}

    def on_line(line: str) -> None:
        parts = line.rstrip("\n").split(" ", 3)
        if parts[0] == "R":
            results[int(parts[2])] = (parts[3].split(" ", 1)[0], json.loads(parts[3].split(" ", 1)[1]))
            if log and results[int(parts[2])][0] in BAD_OUTCOMES:
                log(f"{kind} #{parts[2]}: {results[int(parts[2])]}")
        elif parts[0] == "L":
            results[-1] = ("legit", [float(parts[2])])

    def on_hang(index: int, limit: float) -> None:
        results[index] = ("hang", [f"no answer within {limit:.0f} s", 0, limit])

    def on_crash(index: int, status: int, tail: str) -> None:
        results[index] = ("crash", [f"exit status {status}: {tail}", 0, 0])

    drive(lambda chunk: [sys.executable, __file__, "--child", kind, json.dumps(chunk), str(seed), work], indices,
          first_timeout_s=first_timeout_s, timeout_s=timeout_s, on_line=on_line, on_hang=on_hang,
          on_crash=on_crash, key=lambda _, index: index, batch=batch, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if folder is None:  # the clean artefacts (112 MB for FlexEvent) and any case a crash left
        __import__("shutil").rmtree(work, ignore_errors=True)
    return results


def table(all_results: dict[str, dict[int, tuple[str, list]]]) -> str:
    """Markdown table: cases, outcome counts, peak RSS of the worst case against the clean artefact's."""
    head = "| kind | mutants | " + " | ".join(OUTCOMES) + " | harness | max peak RSS MB | clean peak RSS MB |"
    rows = [head, "|" + "---|" * (len(OUTCOMES) + 5)]
    for kind, results in all_results.items():
        cases = {i: r for i, r in results.items() if i >= 0}
        counts = Counter(outcome for outcome, _ in cases.values())
        peak = max((float(r[1][1]) for r in cases.values() if len(r[1]) > 1), default=0.0)
        legit = results.get(-1, ("legit", [float("nan")]))[1][0]
        rows.append(f"| {kind} | {len(cases)} | " + " | ".join(str(counts[o]) for o in OUTCOMES)
                    + f" | {counts['harness']} | {peak:.0f} | {legit:.0f} |")
    return "\n".join(rows)


def _run_into(merged: dict, kind: str, indices: list[int], seed: int) -> None:
    merged.update(run(kind, indices, seed, log=print))


def main() -> int:
    """Command line: run the fuzz, print the table and the bad cases."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="rvt,model,export")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="child processes per kind running at once")
    parser.add_argument("--json", help="write every outcome here")
    args = parser.parse_args()
    everything: dict[str, dict[int, tuple[str, list]]] = {}
    for kind in args.kinds.split(","):
        indices = list(range(args.start, args.start + args.count))
        parts = [indices[j::args.jobs] for j in range(args.jobs)]
        merged: dict[int, tuple[str, list]] = {}
        threads = [threading.Thread(target=_run_into, args=(merged, kind, part, args.seed)) for part in parts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        everything[kind] = merged
        print(table({kind: merged}), flush=True)
    print(table(everything))
    if args.json:
        Path(args.json).write_text(json.dumps({k: {str(i): r for i, r in v.items()} for k, v in everything.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
