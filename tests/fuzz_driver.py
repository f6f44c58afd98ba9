"""The parent's loop shared by the fuzz harnesses (fuzz_artifacts, fuzz_readers, fuzz_score): child processes
run the cases a chunk at a time, printing "S kind index" before a case and "R kind index ..." after it; a
child that stops answering is killed and its current case is a hang, one that dies leaves its current case a
crash, and a fresh child goes on with the rest of the chunk."""

from __future__ import annotations

import collections
import queue
import subprocess
import threading
from collections.abc import Callable, Hashable, Sequence


def drive(command: Callable[[list], list[str]], cases: Sequence, *, first_timeout_s: float, timeout_s: float,
          on_line: Callable[[str], None], on_hang: Callable[[Hashable, float], None],
          on_crash: Callable[[Hashable, int, str], None], key: Callable[[str, int], Hashable] = lambda k, i: (k, i),
          batch: int | None = None, on_stuck: Callable[[list], None] | None = None, **popen) -> None:
    """Run `cases` through children started by `command(chunk)` (`popen`: more subprocess.Popen arguments),
    `batch` cases a child at most (all by default). Every line but "S" goes to `on_line`; the case an "S" or
    "R" line names is `key(kind, index)`. A child silent past `first_timeout_s` before its first case or
    `timeout_s` within one is killed and `on_hang(case, seconds)` called; one whose output ends inside a case
    gives `on_crash(case, exit status, its last 3 stderr lines joined by " | ")`. Either way that case is done
    and a fresh child takes the rest. With `on_stuck`, a child that finishes no case at all ends the run with
    `on_stuck(the cases left)` instead of starting again."""
    done: set = set()
    todo = list(cases)
    while todo:
        chunk, todo = (todo[:batch], todo[batch:]) if batch else (todo, [])
        process = subprocess.Popen(command(chunk), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   **popen)
        lines: queue.Queue = queue.Queue()
        stderr: collections.deque = collections.deque(maxlen=3)
        threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
        drain = threading.Thread(target=stderr.extend, args=(process.stderr,), daemon=True)
        drain.start()
        current, limit = None, first_timeout_s
        while True:
            try:
                line = lines.get(timeout=limit)
            except queue.Empty:
                process.kill()
                process.wait()
                if current is not None:
                    done.add(current)
                    on_hang(current, limit)
                break
            if line is None:
                process.wait()
                if current is not None:
                    drain.join(timeout=5)
                    done.add(current)
                    on_crash(current, process.returncode, "".join(stderr).strip().replace("\n", " | ")[-300:])
                break
            parts = line.rstrip("\n").split(" ", 3)
            if parts[0] == "S":
                current, limit = key(parts[1], int(parts[2])), timeout_s
                continue
            if parts[0] == "R":
                done.add(key(parts[1], int(parts[2])))
                current = None
            on_line(line)
        rest = [case for case in chunk if case not in done]
        if on_stuck is not None and len(rest) == len(chunk):
            on_stuck(rest + todo)
            return
        todo = rest + todo


def _pump(stream, sink: queue.Queue) -> None:
    """Every line of `stream` into `sink`, then None."""
    for line in stream:
        sink.put(line)
    sink.put(None)
