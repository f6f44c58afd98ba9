"""Structured fuzzing of every reader (tests/fuzz_readers.py) in memory-limited child processes, and of
checkpoints and export folders (tests/fuzz_artifacts.py).

Each format gets mutated headers, declared sizes, signed / byte-swapped dtypes, index tables and compressed
chunks; a crash or a hang ends only the child reading that file and fails this test. The default run is
sized for CI (seconds); `pytest --fuzz-long` reads 2,000 files per format. The artefact fuzz runs a few
dozen mutants here; `python tests/fuzz_artifacts.py --count 2000` runs the long one.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def fuzz():
    import fuzz_readers

    return fuzz_readers


def test_mutated_files_of_every_format_end_in_data_or_a_flexdet_error(fuzz, request):
    files = 2000 if request.config.getoption("--fuzz-long") else 60
    cases = [(kind, i) for i in range(files) for kind in fuzz.FORMATS]
    results = fuzz.run(cases, seed=1)
    print("\n" + fuzz.table(results))
    assert len(results) == len(cases)
    bad = {case: outcome for case, outcome in results.items() if outcome[0] in fuzz.BAD_OUTCOMES + ("harness",)}
    assert not bad, f"{len(bad)} bad outcomes, e.g. {sorted(bad.items())[:5]}"
    for kind in fuzz.FORMATS:
        outcomes = {outcome for (k, _), (outcome, _) in results.items() if k == kind}
        assert outcomes == {"ok", "flexdet"}, (kind, outcomes)  # the mutations neither all break nor all pass


def test_the_harness_reports_a_crash_and_a_hang_instead_of_dying(fuzz, monkeypatch, tmp_path):
    """A child killed by a signal is a crash of the case it was reading, one that stops answering a hang; the
    run goes on with the next case either way."""
    crash_then_hang = tmp_path / "child.py"
    crash_then_hang.write_text(
        "import os, signal, sys, time, json\n"
        "cases = json.loads(sys.argv[2])\n"
        "for kind, i in cases:\n"
        "    print(f'S {kind} {i}', flush=True)\n"
        "    if i == 0: os.kill(os.getpid(), signal.SIGABRT)\n"
        "    if i == 1: time.sleep(60)\n"
        "    print(f'R {kind} {i} ok \"\"', flush=True)\n")
    monkeypatch.setattr(fuzz, "__file__", str(crash_then_hang))
    results = fuzz.run([("dat", 0), ("dat", 1), ("dat", 2)], seed=0, timeout_s=2, first_timeout_s=2)
    assert [results[("dat", i)][0] for i in range(3)] == ["crash", "hang", "ok"]


# -- checkpoints and export folders (tests/fuzz_artifacts.py) ------------------------------------------------


@pytest.fixture(scope="module")
def artifacts_fuzz():
    import fuzz_artifacts

    return fuzz_artifacts


@pytest.mark.parametrize("kind, cases", [("model", 24), ("export", 16), ("rvt", 12), ("flexevent", 8)])
def test_mutated_checkpoints_and_exports_are_refused_in_one_line_or_load_equal(artifacts_fuzz, kind, cases,
                                                                             tmp_path):
    """Each mutant is refused with a one-line FlexdetError naming the file or loads as the file says: no
    traceback, no code run, no hang, memory within the bound of the clean artefact's need."""
    if kind == "rvt" and not artifacts_fuzz.RVT_CKPT.is_file():
        pytest.skip("RVT peer fixture is not available (../shared/data/peers/rvt next to the checkout)")
    results = artifacts_fuzz.run(kind, list(range(cases)), seed=3, folder=str(tmp_path))
    print("\n" + artifacts_fuzz.table({kind: results}))
    outcomes = {i: r for i, r in results.items() if i >= 0}
    assert len(outcomes) == cases
    bad = {i: r for i, r in outcomes.items() if r[0] in artifacts_fuzz.BAD_OUTCOMES + ("harness",)}
    assert not bad, bad
    assert "refused" in {r[0] for r in outcomes.values()}


def test_the_small_flexevent_checkpoint_is_the_release_layout_and_converts(artifacts_fuzz, tmp_path):
    """The FlexEvent mutants start from a file written as FlexEvent's release is (the official keys in their
    order, float32 weights, int64 counters, a flat dict) at RVT-T / 16-channel widths, which flexdet converts:
    the mutants reach the converter's real paths, not an early refusal."""
    import numpy as np
    import torch

    from flexdet.convert import convert_checkpoint
    from flexdet.models.safe_unpickle import load_foreign_checkpoint

    io = np.load(artifacts_fuzz.FLEXEVENT_IO)
    official = dict(zip((str(k) for k in io["keys"]),
                        (tuple(int(n) for n in s.split(",")) if s else () for s in io["shapes"])))
    path = artifacts_fuzz.clean_artifact("flexevent", tmp_path)
    assert path.stat().st_size < 120e6  # the released-size file is 183 MB
    payload = load_foreign_checkpoint(path)
    assert list(payload) == list(official)
    for key, value in payload.items():
        assert value.dtype == (torch.int64 if key.endswith("num_batches_tracked") else torch.float32), key
        assert tuple(value.shape) == artifacts_fuzz.small_flexevent_shape(key, official[key]), key
    assert payload["mdl.rvt_block.0.downsample_cf2cl.conv.weight"].shape == (32, 20, 7, 7)
    assert payload["mdl.rgb_backbone.fpn_lateral5.weight"].shape == (16, 2048, 1, 1)
    assert payload["mdl.rgb_backbone.bottom_up.res5.2.conv3.weight"].shape == official[
        "mdl.rgb_backbone.bottom_up.res5.2.conv3.weight"]
    converted, _ = convert_checkpoint(path)
    config = converted.model.config
    assert (config.preset, config.widths, config.frame_fpn_width, config.head_width) == (
        "flexevent-t-dsec-2class", [32, 64, 128, 256], 16, 16)
    assert converted.class_names == ["car", "pedestrian"]
    state = converted.model.state_dict()
    assert torch.equal(state["fusers.2.project.weight"], payload["mdl.rvt_block.2.embedder.weight"])


def test_the_injected_calls_do_run_code_when_loaded_unsafely_and_never_here(artifacts_fuzz, tmp_path):
    """The oracle's canary works: plain pickle runs the injected os.system; flexdet's loaders refuse it."""
    import pickle

    import torch

    from flexdet.errors import FlexdetError
    from flexdet.models.checkpoint import load_model
    from flexdet.models.safe_unpickle import load_foreign_checkpoint

    canary = tmp_path / "CANARY"
    injected = artifacts_fuzz._inject(pickle.dumps({"a": 1}, protocol=2), "os", "system", str(canary))
    assert pickle.loads(injected) == {"a": 1} and canary.exists()
    canary.unlink()
    torch.save({"state_dict": {"x": torch.zeros(2)}}, tmp_path / "clean.pt")
    members = artifacts_fuzz._zip_members((tmp_path / "clean.pt").read_bytes())
    name = artifacts_fuzz._pickle_name(members)
    members[name] = artifacts_fuzz._inject(members[name], "os", "system", str(canary))
    (tmp_path / "evil.pt").write_bytes(artifacts_fuzz._zip(members))
    for load in (load_foreign_checkpoint, load_model):
        with pytest.raises(FlexdetError):
            load(tmp_path / "evil.pt")
    assert not canary.exists()
