"""Structured fuzzing of every reader (benchmarks/fuzz_readers.py) in memory-limited child processes.

Each format gets mutated headers, declared sizes, signed / byte-swapped dtypes, index tables and compressed
chunks; a crash or a hang ends only the child reading that file and fails this test. The default run is
sized for CI (seconds); `pytest --fuzz-long` reads 2,000 files per format.
"""

from __future__ import annotations

import pytest
from readers_helpers import load_benchmark_script


def _fuzz_module():
    return load_benchmark_script("fuzz_readers")


@pytest.fixture(scope="module")
def fuzz():
    return _fuzz_module()


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
