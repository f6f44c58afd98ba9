"""SIGKILL trials of flexdet's interrupted writes: `flexdet synth` and training checkpoints.

synth: generate a reference dataset uninterrupted; then per trial start `flexdet synth` into a fresh
folder, SIGKILL the main process at a random moment, check that its worker processes are gone within a
second, rerun the same command, and check that no hidden temporary is left and every file equals the
reference byte for byte.

checkpoint: a child process saves checkpoints (flexdet.training.checkpoint.save_checkpoint, ~30 MB each)
in a loop and is SIGKILLed at a random moment; then the next save removes what the killed one left, and
the checkpoint on disk loads and holds exactly the payload of a step that was completed (or of the one
being saved, when the kill fell after the rename).

    python tests/kill_trials.py --trials 5
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLEXDET = [sys.executable, "-c", "import sys; from flexdet.cli import main; sys.exit(main())"]
SYNTH_ARGS = ["--sequences", "6", "--duration", "1.0", "--size", "96x64", "--workers", "2", "--seed", "3"]
CHECKPOINT_CHILD = """
import sys, torch
from flexdet.training.checkpoint import save_checkpoint
path = sys.argv[1]
for step in range(1, 1000):
    generator = torch.Generator().manual_seed(step)
    save_checkpoint(path, {"step": step, "weights": torch.randn(7_500_000, generator=generator)})
    print(step, flush=True)
"""


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _hidden(folder: Path) -> list[str]:
    """Temporaries (hidden entries other than the configuration stamp) anywhere under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name != ".synth-config.yaml")


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "dataset.yaml")
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "dataset.yaml")
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def synth_trial(folder: Path, reference: Path, delay: float) -> dict:
    out = folder / f"killed_{delay:.2f}"
    command = [*FLEXDET, "synth", "--out", str(out), *SYNTH_ARGS]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    workers = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(1.0)
    alive = [w for w in workers if _alive(w)]
    left = _hidden(out) if out.exists() else []
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"killed_after_s": round(delay, 2), "workers_alive_1s_later": len(alive),
            "temporaries_after_kill": len(left), "temporaries_after_rerun": _hidden(out),
            "identical_to_uninterrupted": _same_tree(out, reference)}


def checkpoint_trial(folder: Path, delay: float) -> dict:
    import torch

    from flexdet.atomic import clean_stale_temporaries

    path = folder / f"ck_{delay:.2f}" / "last.pt"
    path.parent.mkdir()
    process = subprocess.Popen([sys.executable, "-c", CHECKPOINT_CHILD, str(path)], stdout=subprocess.PIPE,
                               text=True)
    first = process.stdout.readline()  # the kill lands `delay` s after the first save, mid-way through others
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    output, _ = process.communicate()
    done = [int(v) for v in (first + output).split()]
    left = [p.name for p in path.parent.iterdir() if p.name != "last.pt"]
    removed = clean_stale_temporaries(path.parent)
    remaining = [p.name for p in path.parent.iterdir() if p.name != "last.pt"]
    result = {"killed_after_s": round(delay, 2), "steps_saved": len(done), "temporaries_after_kill": len(left),
              "removed_by_cleanup": len(removed), "temporaries_after_cleanup": len(remaining)}
    if path.exists():
        state = torch.load(path, weights_only=True)
        step = int(state["step"])
        expected = torch.randn(7_500_000, generator=torch.Generator().manual_seed(step))
        completed_or_next = {done[-1], done[-1] + 1} if done else {1}
        result.update(step_on_disk=step, step_is_completed_or_next=step in completed_or_next,
                      payload_exact=bool(torch.equal(state["weights"], expected)))
    else:
        result.update(step_on_disk=None, step_is_completed_or_next=not done, payload_exact=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["synth", "checkpoint"])
    args = parser.parse_args()
    rng = random.Random(args.seed)
    failures = 0
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if args.only != "checkpoint":
            reference = folder / "reference"
            start = time.monotonic()
            subprocess.run([*FLEXDET, "synth", "--out", str(reference), *SYNTH_ARGS],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            span = time.monotonic() - start
            for _ in range(args.trials):
                row = synth_trial(folder, reference, rng.uniform(0.3, span))
                failures += bool(row["workers_alive_1s_later"] or row["temporaries_after_rerun"]
                                 or not row["identical_to_uninterrupted"])
                print("synth", row, flush=True)
        if args.only != "synth":
            for _ in range(args.trials):
                row = checkpoint_trial(folder, rng.uniform(0.0, 3.0))
                failures += bool(row["temporaries_after_cleanup"] or not row["step_is_completed_or_next"]
                                 or not row["payload_exact"])
                print("checkpoint", row, flush=True)
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
