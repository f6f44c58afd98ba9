"""Fuzzing of `flexdet score`'s inputs (tests/fuzz_score.py): mutated label / prediction files, folders and YAML
end in a correct score or a one-line FlexdetError, never a traceback, a silently wrong result, a hang or memory
beyond the stated bound. CI runs ~50 mutants; `python tests/fuzz_score.py --mutants 700` runs 2,100."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_score  # noqa: E402


def test_mutated_score_inputs_end_in_a_correct_score_or_a_one_line_error():
    cases = [(kind, i) for i in range(17) for kind in fuzz_score.SEEDS]
    results = fuzz_score.run(cases, seed=3)
    print("\n" + fuzz_score.table(results))
    assert len(results) == len(cases)
    bad = {case: result for case, result in results.items() if result[0] in fuzz_score.BAD_OUTCOMES}
    assert not bad, f"{len(bad)} bad outcomes, e.g. {sorted(bad.items())[:5]}"
    outcomes = {result[0] for result in results.values()}
    assert outcomes == {"accepted", "refused"}  # the mutations neither all break nor all pass


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_the_oracle_reports_a_reader_that_lets_bad_values_through(monkeypatch):
    """With the value checks removed (a column converted as numpy casts it), mutants with nan, inf or wrapped
    values are scored; the oracle must call some of them wrong."""
    import flexdet.data.labels as labels

    monkeypatch.setattr(labels, "_fitted", lambda path, column, name, target: column.astype(target))
    clean = {kind: fuzz_score.clean_report(kind) for kind in fuzz_score.SEEDS}
    outcomes = [fuzz_score.run_case(kind, i, 5, clean[kind])[0] for i in range(12) for kind in fuzz_score.SEEDS]
    assert "wrong" in outcomes, outcomes


@pytest.mark.parametrize("outcome", ["hang", "traceback"])
def test_the_harness_reports_a_hang_or_a_dead_child_and_goes_on(monkeypatch, tmp_path, outcome):
    child = tmp_path / "child.py"
    child.write_text(
        "import json, os, signal, sys, time\n"
        "cases = json.loads(sys.argv[2])\n"
        "for kind, i in cases:\n"
        "    print(f'S {kind} {i}', flush=True)\n"
        f"    if i == 0: {'time.sleep(60)' if outcome == 'hang' else 'os.kill(os.getpid(), signal.SIGKILL)'}\n"
        "    print(f'R {kind} {i} accepted 0 \"\"', flush=True)\n")
    monkeypatch.setattr(fuzz_score, "__file__", str(child))
    results = fuzz_score.run([("gen1", 0), ("gen1", 1)], timeout_s=2, first_timeout_s=2)
    assert [results[("gen1", i)][0] for i in range(2)] == [outcome, "accepted"]
