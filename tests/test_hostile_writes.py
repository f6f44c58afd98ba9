"""Interrupted writes (issue "Hostile and broken input", failure 7): what a SIGKILLed atomic write, checkpoint
save or `flexdet synth` leaves behind is removed by the next run, workers die with their parent, and the
rerun's result equals an uninterrupted one (tests/kill_trials.py runs more trials)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flexdet.atomic import atomic_write_bytes, clean_stale_temporaries, temporary_prefix


def _kill_trials():
    import kill_trials

    return kill_trials


def _killed_mid_write(target: Path) -> list[Path]:
    """Start an atomic write of `target` in a child, SIGKILL it mid-write; return the files it left."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from flexdet.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half" * 1000)
            print("writing", flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    return [p for p in target.parent.iterdir() if p != target]


def test_the_next_atomic_write_removes_what_a_killed_one_left(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")
    left = _killed_mid_write(target)
    assert len(left) == 1 and left[0].name.startswith(".last.pt.pid")
    assert target.read_bytes() == b"previous"
    atomic_write_bytes(target, b"next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert target.read_bytes() == b"next"


def test_clean_stale_temporaries_keeps_those_of_live_processes(tmp_path):
    left = _killed_mid_write(tmp_path / "model.onnx")
    mine = tmp_path / (temporary_prefix("other.npy") + "abc.tmp.npy")
    mine.write_bytes(b"in progress")
    plain = tmp_path / ".hidden_user_file"
    plain.write_bytes(b"not ours")
    assert clean_stale_temporaries(tmp_path) == left
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, plain.name])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find worker processes")
def test_killed_synth_leaves_no_workers_and_its_rerun_equals_an_uninterrupted_run(tmp_path):
    trials = _kill_trials()
    reference = tmp_path / "reference"
    subprocess.run([*trials.FLEXDET, "synth", "--out", str(reference), *trials.SYNTH_ARGS], check=True,
                   capture_output=True)
    row = trials.synth_trial(tmp_path, reference, delay=2.0)
    assert row["workers_alive_1s_later"] == 0, row
    assert row["temporaries_after_rerun"] == [], row
    assert row["identical_to_uninterrupted"], row


def test_killed_checkpoint_save_keeps_a_complete_checkpoint_and_no_leftovers(tmp_path):
    row = _kill_trials().checkpoint_trial(tmp_path, delay=1.5)
    assert row["temporaries_after_cleanup"] == 0, row
    assert row["step_is_completed_or_next"] and row["payload_exact"], row
    assert row["steps_saved"] >= 1 and os.listdir(tmp_path / "ck_1.50") == ["last.pt"]


def test_unmarked_temporaries_of_older_versions_are_removed_once_a_day_old(tmp_path):
    old = tmp_path / ".last.pt.k2j_9xq1.tmp.pt"  # how atomic_path named temporaries before marking the pid
    recent = tmp_path / ".last.pt.abcdefgh.tmp.pt"
    unrelated = tmp_path / ".config"
    for path in (old, recent, unrelated):
        path.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    for path in (old, unrelated):
        os.utime(path, (two_days_ago, two_days_ago))
    assert clean_stale_temporaries(tmp_path) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([recent.name, unrelated.name])
    os.utime(recent, (two_days_ago, two_days_ago))
    atomic_write_bytes(tmp_path / "last.pt", b"checkpoint")  # the next write to the target removes it too
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", unrelated.name])
