"""Regression tests of issue "Results nobody can fool", findings 5-10: run-folder locks, export copies that must
agree, memory bounded by what a checkpoint / YAML file can legitimately need, convert refusing values that break
later, one-line errors instead of tracebacks, and the smaller items (synth stamp, rates, index cache).

Allocations that could take the process down run in a child under RLIMIT_AS, so a blow-up fails the test.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from flexdet.cli import main
from flexdet.errors import CheckpointError, ConfigError, FlexdetError

RVT_CKPT = Path("../shared/data/peers/rvt/rvt_random.ckpt")


def run_child(code: str, memory_gib: float = 2.0, timeout: float = 300) -> subprocess.CompletedProcess:
    """`code` in a fresh Python that may map at most `memory_gib` more than torch and flexdet take once imported
    (RLIMIT_AS set after the imports: torch's CUDA build maps gigabytes of address space on import)."""
    prelude = ("import resource, torch, flexdet.convert.rvt, flexdet.models.checkpoint, flexdet.data.readers\n"
               "size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024\n"
               f"resource.setrlimit(resource.RLIMIT_AS, (size + {int(memory_gib * 2**30)},) * 2)\n")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def error_in_child(setup: str, call: str, memory_gib: float) -> subprocess.CompletedProcess:
    """`call` after `setup` in a `run_child` process, printing the FlexdetError it raises (one line expected)."""
    return run_child(f"{setup}\nfrom flexdet.errors import FlexdetError\ntry:\n    {call}\n"
                     f"except FlexdetError as exc:\n    print(type(exc).__name__ + ':', exc)\n", memory_gib)


def cli(*argv: str, capsys) -> tuple[int, str]:
    """Exit status and stderr of `flexdet argv`."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def one_line_error(status: int, err: str, *words: str) -> None:
    """A flexdet one-line error (status 2) holding every word."""
    assert status == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def rvt_state() -> dict:
    """The RVT fixture's state dict as plain tensors (`mdl.*` keys)."""
    if not RVT_CKPT.is_file():
        pytest.skip("RVT peer fixture is not available (../shared/data/peers/rvt next to the checkout)")
    from flexdet.models.safe_unpickle import load_foreign_checkpoint

    return dict(load_foreign_checkpoint(RVT_CKPT)["state_dict"])


def save_rvt(path: Path, state: dict, config: dict | None = None) -> Path:
    """An RVT-layout Lightning checkpoint of plain containers (config as hyper_parameters.full_config)."""
    torch.save({"state_dict": state, "hyper_parameters": {"full_config": config or {}}}, path)
    return path


@pytest.fixture(scope="module")
def nano_model_pt(tmp_path_factory) -> Path:
    """A small flexdet model.pt (nano preset, identity geometry 64x48)."""
    from flexdet.data.input_spec import identity_spec
    from flexdet.models import build_model
    from flexdet.models.checkpoint import save_model

    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=False).eval()
    spec = identity_spec(48, 64, bins=model.config.bins)
    return save_model(tmp_path_factory.mktemp("nano") / "model.pt", model, spec)


# -- 5. a run folder is locked while a process writes it ----------------------------------------------------


def test_a_second_train_into_a_run_folder_another_process_holds_is_refused(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from flexdet.atomic import folder_lock
        with folder_lock({str(tmp_path / 'run')!r}):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, err = cli("train", "--preset", "quickstart", "--data", tmp_path / "missing", "--out",
                          tmp_path / "run", capsys=capsys)
        one_line_error(status, err, str(tmp_path / "run"), f"process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path, capsys):
    from flexdet.atomic import _HOST, LOCK_NAME

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(f"{dead.pid}@{_HOST}\n")
    status, err = cli("train", "--preset", "quickstart", "--data", tmp_path / "missing", "--out", run, capsys=capsys)
    assert f"took over {run / LOCK_NAME}" in err and str(dead.pid) in err
    assert status == 2 and "missing" in err  # it went on to the data, then released the lock
    assert not (run / LOCK_NAME).exists()


# -- 6. the copies of an export's input specification must agree --------------------------------------------


@pytest.fixture(scope="module")
def export_dir(nano_model_pt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "nano"
    assert main(["export", str(nano_model_pt), "--out", str(out)]) == 0
    return out


def _copy_export(export_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    target.mkdir()
    for item in export_dir.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


@pytest.mark.parametrize("field, value", [("window_us", 1000), ("time_norm", "events"),
                                          ("geometry.sensor_width", 200_000)])
def test_metadata_json_disagreeing_with_model_pt_and_onnx_is_refused_naming_the_field(export_dir, tmp_path, field,
                                                                                     value):
    from flexdet.export.runtime.loader import load_runtime

    folder = _copy_export(export_dir, tmp_path)
    metadata = json.loads((folder / "metadata.json").read_text())
    target = metadata["input"]
    *parents, last = field.split(".")
    for part in parents:
        target = target[part]
    assert last in target, sorted(target)
    target[last] = value
    (folder / "metadata.json").write_text(json.dumps(metadata))
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(CheckpointError, match=rf"disagree on input\.{field}") as info:
            load_runtime(folder, backend=backend)
        assert "metadata.json" in str(info.value) and "\n" not in str(info.value)


def test_metadata_json_missing_required_fields_is_a_one_line_error(export_dir, tmp_path):
    from flexdet.export.runtime.loader import load_runtime

    folder = _copy_export(export_dir, tmp_path)
    (folder / "metadata.json").write_text(json.dumps({**json.loads((folder / "metadata.json").read_text()),
                                                      "input": {}}))
    with pytest.raises(ConfigError, match=r"metadata\.json\.input: missing key\(s\) \['geometry'\]"):
        load_runtime(folder, backend="torch")


def test_model_pt_disagreeing_with_the_onnx_file_is_refused(export_dir, tmp_path, nano_model_pt):
    from flexdet.data.input_spec import identity_spec
    from flexdet.export.runtime.loader import load_runtime
    from flexdet.models.checkpoint import load_model, save_model

    folder = _copy_export(export_dir, tmp_path)
    (folder / "metadata.json").unlink()
    loaded = load_model(nano_model_pt)
    save_model(folder / "model.pt", loaded.model, identity_spec(48, 64, bins=loaded.spec.bins, window_us=1000))
    with pytest.raises(CheckpointError, match=r"model\.onnx and .*model\.pt disagree on input\.window_us"):
        load_runtime(folder / "model.onnx", backend="torch")


# -- 7. memory bounded by what the file can legitimately need -----------------------------------------------


def _hand_pickled_checkpoint(path: Path, size: tuple, stride: tuple, numel: int, stored: bytes,
                             compress: bool = False) -> Path:
    """A torch-layout zip whose one tensor is `size`/`stride` over a storage declared to hold `numel` floats."""
    class Storage:
        pass

    def persistent_id(obj):
        return ("storage", torch.FloatStorage, "0", "cpu", numel) if isinstance(obj, Storage) else None

    class Rebuild:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (Storage(), 0, size, stride, False, {}))

    buffer = __import__("io").BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = persistent_id
    pickler.dump({"state_dict": {"mdl.backbone.x": Rebuild()}})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", stored)
    return path


def _convert_in_child(path: Path, memory_gib: float = 1.0) -> str:
    result = run_child(f"""
        from flexdet.convert import convert_checkpoint
        from flexdet.errors import FlexdetError
        try:
            convert_checkpoint({str(path)!r})
        except FlexdetError as exc:
            print("FlexdetError:", exc)
        """, memory_gib)
    assert result.returncode == 0, result.stderr[-800:]
    assert "FlexdetError:" in result.stdout, result.stdout
    return result.stdout


def test_a_stride_0_view_of_a_tiny_storage_is_refused_not_cloned(tmp_path):
    path = _hand_pickled_checkpoint(tmp_path / "stride0.ckpt", (10**9,), (0,), 1, b"\0" * 4)
    assert path.stat().st_size < 1000
    assert "does not fit its storage" in _convert_in_child(path)


def test_a_storage_declaring_a_billion_values_is_refused_before_reading(tmp_path):
    path = _hand_pickled_checkpoint(tmp_path / "huge.ckpt", (4,), (1,), 10**9, b"\0" * 16)
    assert "declares 1000000000 values" in _convert_in_child(path)


def test_a_zip_bomb_member_is_refused_from_its_declared_size(tmp_path):
    path = _hand_pickled_checkpoint(tmp_path / "bomb.ckpt", (4,), (1,), 4, b"\0" * 2**31, compress=True)
    assert path.stat().st_size < 3 * 2**20
    assert "more than the whole file" in _convert_in_child(path, memory_gib=1.0)
    result = error_in_child("from flexdet.models.checkpoint import load_model", f"load_model({str(path)!r})", 1.0)
    assert "more than the whole file" in result.stdout, (result.stdout, result.stderr[-500:])


def test_a_damaged_pickle_member_or_persistent_id_is_a_one_line_error(tmp_path):
    from flexdet.models.safe_unpickle import load_foreign_checkpoint

    torch.save({"state_dict": {"x": torch.zeros(4)}}, tmp_path / "a.ckpt")
    data = bytearray((tmp_path / "a.ckpt").read_bytes())
    start = data.find(b"data.pkl") + len(b"data.pkl")
    data[data.find(b"\x80\x02", start) + 3] ^= 0xFF  # inside data.pkl's bytes: its CRC no longer matches
    (tmp_path / "crc.ckpt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged zip member") as info:
        load_foreign_checkpoint(tmp_path / "crc.ckpt")
    assert "\n" not in str(info.value)


def load_changed_model_pt(model_pt: Path, folder: Path, key: str, value) -> subprocess.CompletedProcess:
    """`load_model` in a 2 GiB child on a copy of model.pt whose model_config[key] is `value`; prints the error."""
    payload = torch.load(model_pt, weights_only=True)
    payload["model_config"][key] = value
    torch.save(payload, folder / "model.pt")
    return error_in_child("from flexdet.models.checkpoint import load_model",
                          f"load_model({str(folder / 'model.pt')!r})", 2.0)


def test_model_widths_in_model_pt_are_bounded_before_the_model_is_built(nano_model_pt, tmp_path):
    result = load_changed_model_pt(nano_model_pt, tmp_path, "widths", [4096, 8192, 16384, 32768])
    assert "MiB of weights but the checkpoint holds" in result.stdout, (result.stdout, result.stderr[-500:])


def test_a_neck_depth_of_a_million_in_model_pt_is_refused_at_once(nano_model_pt, tmp_path):
    """Found by tests/fuzz_artifacts.py (export case 1437, seed 2): building a million neck blocks, even on the meta
    device, hung the loader for minutes."""
    result = load_changed_model_pt(nano_model_pt, tmp_path, "neck_depth", 1_000_000)
    assert "model.neck_depth: must be in 1..64" in result.stdout, (result.stdout, result.stderr[-500:])


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    from flexdet.config import load_yaml
    from flexdet.training.config import TrainConfig

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1024
    with pytest.raises(ConfigError, match="expands to .* values through aliases"):
        load_yaml(TrainConfig, bomb)


def test_an_npy_header_claiming_10_12_rows_is_refused_before_reading(tmp_path):
    from flexdet.data.readers.npy import load_npy

    path = tmp_path / "timestamps_us.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.int64))
    header["shape"] = (10**12,)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 64)
    result = error_in_child("from flexdet.data.readers.npy import load_npy", f"load_npy({str(path)!r})", 1.0)
    assert "declares 1000000000000 values" in result.stdout, (result.stdout, result.stderr[-500:])
    np.save(tmp_path / "ok.npy", np.arange(5))
    assert load_npy(tmp_path / "ok.npy").tolist() == [0, 1, 2, 3, 4]


# -- 8. convert refuses values that break later -------------------------------------------------------------


def test_convert_refuses_a_partition_split_that_pads_to_a_huge_input(rvt_state, tmp_path, capsys):
    path = save_rvt(tmp_path / "split.ckpt", rvt_state, {"model": {"backbone": {"partition_split_32": 10**6}}})
    status, err = cli("convert", path, "--out", tmp_path / "out", capsys=capsys)
    one_line_error(status, err, str(path), "partition_split_32")


def test_convert_refuses_all_nan_weights_naming_the_tensor(rvt_state, tmp_path, capsys):
    key = "mdl.yolox_head.cls_preds.0.weight"
    path = save_rvt(tmp_path / "nan.ckpt", {**rvt_state, key: torch.full_like(rvt_state[key], float("nan"))})
    status, err = cli("convert", path, "--out", tmp_path / "out", capsys=capsys)
    one_line_error(status, err, str(path), key, "NaN")


def test_a_stored_confidence_threshold_is_saved_in_the_model_and_used(rvt_state, tmp_path):
    from flexdet.models.checkpoint import load_model

    path = save_rvt(tmp_path / "conf.ckpt", rvt_state,
                    {"model": {"postprocess": {"confidence_threshold": 0.4, "nms_threshold": 0.6}}})
    assert main(["convert", str(path), "--out", str(tmp_path / "out")]) == 0
    config = load_model(tmp_path / "out").model.config
    assert (config.conf_thresh, config.nms_thresh) == (0.4, 0.6)
    bad = save_rvt(tmp_path / "bad.ckpt", rvt_state, {"model": {"postprocess": {"confidence_threshold": "high"}}})
    with pytest.raises(CheckpointError, match="confidence_threshold"):
        __import__("flexdet.convert", fromlist=["x"]).convert_checkpoint(bad)


# -- 9. one-line errors instead of tracebacks ---------------------------------------------------------------


def _variants(state: dict) -> dict[str, tuple[dict, dict | None, str]]:
    stem = "mdl.backbone.stages.0.downsample_cf2cl.conv.weight"
    qkv = "mdl.backbone.stages.0.att_blocks.0.att_window.self_attn.qkv.weight"
    # LayerScale is folded into the projection it scales (g * W, g * b): shapes that broadcast must not pass
    proj = "mdl.backbone.stages.0.att_blocks.0.att_window.self_attn.proj.weight"
    fc2_bias = "mdl.backbone.stages.0.att_blocks.0.att_grid.mlp.net.2.bias"
    gamma = "mdl.backbone.stages.0.att_blocks.0.att_window.ls1.gamma"
    width = int(state[proj].shape[1]) if proj in state else 1
    cyclic: dict = {"model": {}}
    cyclic["model"]["backbone"] = cyclic
    return {
        "wrong shape": ({**state, qkv: torch.zeros(7, 5)}, None, "self_attn.qkv"),
        "wrong head shape": ({**state, "mdl.yolox_head.reg_preds.0.weight": torch.zeros(3, 3)}, None, "reg_preds"),
        "projection weight of one row": ({**state, proj: torch.full((1, width), 0.01)}, None, "self_attn.proj"),
        "scalar projection bias": ({**state, fc2_bias: torch.tensor(0.01)}, None, "mlp.net.2.bias"),
        "one LayerScale value": ({**state, gamma: torch.tensor([0.5])}, None, "ls1.gamma"),
        "one LayerScale gamma missing": ({k: v for k, v in state.items() if k != gamma}, None, "ls1.gamma"),
        "integer projection weight": ({**state, proj: torch.ones(width, width, dtype=torch.int64)}, None,
                                      "self_attn.proj"),
        "non-tensor value": ({**state, stem: [1.0, 2.0]}, None, stem),
        "non-string key": ({**state, 7: torch.zeros(1)}, None, "7"),
        "odd hyper-parameter type": (state, {"model": {"backbone": {"partition_split_32": {"a": 1}}}},
                                     "partition_split_32"),
        "cyclic config": (state, cyclic, "cyclic"),
    }


@pytest.mark.parametrize("case", list(_variants({})))
def test_convert_of_a_malformed_checkpoint_is_a_one_line_error(rvt_state, tmp_path, capsys, case):
    state, config, word = _variants(rvt_state)[case]
    path = save_rvt(tmp_path / "bad.ckpt", state, config)
    status, err = cli("convert", path, "--out", tmp_path / "out", capsys=capsys)
    one_line_error(status, err, str(path), word)


def test_weights_that_do_not_match_name_the_key(nano_model_pt, tmp_path):
    from flexdet.models.checkpoint import load_model

    payload = torch.load(nano_model_pt, weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.dim() == 4)
    payload["state_dict"][key] = payload["state_dict"][key][:1]
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=rf"weights do not match .*'{key}' has shape"):
        load_model(tmp_path / "model.pt")


@pytest.mark.parametrize("verb", ["convert", "train", "eval", "export"])
def test_an_out_that_is_a_file_is_refused_before_the_work(verb, tmp_path, capsys, nano_model_pt):
    taken = tmp_path / "taken"
    taken.write_text("x")
    argv = {"convert": ["convert", tmp_path / "missing.ckpt"],
            "train": ["train", "--preset", "quickstart", "--data", tmp_path / "missing"],
            "eval": ["eval", nano_model_pt, "--data", tmp_path / "missing"],
            "export": ["export", nano_model_pt]}[verb]
    for out in (taken, taken / "sub"):
        status, err = cli(*argv, "--out", out, capsys=capsys)
        one_line_error(status, err, "--out", str(taken))
        assert "missing" not in err  # checked before the input is even read


@pytest.mark.parametrize("option", ["--out", "--log"])
def test_demo_outputs_that_cannot_be_written_are_refused_before_the_model_loads(option, tmp_path, capsys):
    status, err = cli("demo", "--source", tmp_path / "missing.h5", "--model", tmp_path / "missing", "--headless",
                      option, tmp_path, capsys=capsys)
    one_line_error(status, err, option, str(tmp_path), "folder")


def test_nan_learning_rate_and_yaml_tags_in_overrides_are_one_line_errors(tmp_path, capsys):
    from flexdet.training.config import load_train_config

    with pytest.raises(ConfigError, match="optim.lr: expected a finite number"):
        load_train_config(preset="quickstart", overrides=["optim.lr=nan"])
    with pytest.raises(ConfigError, match="override optim.lr: not valid YAML"):
        load_train_config(preset="quickstart", overrides=["optim.lr=!!python/object/apply:os.system [echo]"])
    status, err = cli("train", "--preset", "quickstart", "--data", tmp_path, "--out", tmp_path / "run",
                      "optim.lr=!!binary x", capsys=capsys)
    one_line_error(status, err, "optim.lr")


def test_an_npz_saved_as_npy_is_a_format_error(tmp_path):
    from flexdet.data.readers.npy import load_npy
    from flexdet.errors import FormatError

    np.savez(tmp_path / "a.npz", x=np.arange(3))
    os.replace(tmp_path / "a.npz", tmp_path / "timestamps_us.npy")
    with pytest.raises(FormatError, match="npz archive"):
        load_npy(tmp_path / "timestamps_us.npy")


def test_a_3d_rvt_data_array_is_a_format_error_naming_its_shape(tmp_path):
    import h5py

    from flexdet.data import open_recording
    from flexdet.errors import FormatError

    folder = tmp_path / "seq" / "event_representations_v2" / "stacked_histogram_dt=50_nbins=10"
    folder.mkdir(parents=True)
    with h5py.File(folder / "event_representations.h5", "w") as handle:
        handle["data"] = np.zeros((3, 20, 48), np.uint8)
    np.save(folder / "timestamps_us.npy", np.array([50_000, 100_000, 150_000]))
    np.save(folder / "objframe_idx_2_repr_idx.npy", np.array([0, 1]))
    with pytest.raises(FormatError, match=r"'data' has shape \(3, 20, 48\); expected \(N, C, H, W\)"):
        open_recording(tmp_path / "seq")


# -- 10. smaller ones -------------------------------------------------------------------------------------


def test_a_failed_synth_leaves_no_stamp_that_blocks_a_retry(tmp_path, monkeypatch):
    from flexdet.config import apply_overrides
    from flexdet.data.synthetic import dataset
    from flexdet.data.synthetic.config import load_preset

    config = apply_overrides(load_preset("quickstart"), {"dataset.sequences": 6, "scene.duration_s": 0.2,
                                                         "scene.width": 64, "scene.height": 48,
                                                         "dataset.workers": 1})

    def fail(*_):
        raise FlexdetError("simulated failure before the first sequence")

    with monkeypatch.context() as patch:
        patch.setattr(dataset, "write_sequence", fail)
        with pytest.raises(FlexdetError, match="simulated"):
            dataset.generate_dataset(tmp_path / "data", config)
    retry = apply_overrides(config, {"dataset.seed": 7})  # the user changes an option and tries again
    dataset.generate_dataset(tmp_path / "data", retry)
    assert (tmp_path / "data" / "dataset.yaml").is_file()


def test_a_rate_shorter_than_a_microsecond_is_a_clear_error():
    from flexdet.training.config import load_train_config

    with pytest.raises(ConfigError, match=r"data.rates_hz: 1e\+09 Hz gives windows shorter than the 1 µs"):
        load_train_config(preset="quickstart", overrides=["data.rates_hz=[1e9]"])


def test_the_reader_index_goes_to_the_user_cache_not_beside_the_recording(tmp_path, monkeypatch):
    from readers_helpers import random_events

    from flexdet.data import open_recording
    from flexdet.data.readers.evt_encode import write_raw
    from flexdet.data.readers.index import INDEX_SUFFIX

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "dataset"
    data.mkdir()
    write_raw(data / "rec.raw", random_events(5000, 64, 48, 200_000, seed=1), 64, 48, evt="3.0")
    with open_recording(data / "rec.raw") as recording:
        recording.read(50_000, 60_000)
    assert sorted(p.name for p in data.iterdir()) == ["rec.raw"]
    cached = list((tmp_path / "cache" / "flexdet" / "index").glob(f"*{INDEX_SUFFIX}"))
    assert len(cached) == 1
