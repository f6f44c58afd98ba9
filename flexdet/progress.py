"""Progress bars readable in a terminal and in a log file: tqdm's live bar on a terminal; when stderr is piped or
redirected, one whole line per interval (30 s by default) instead of carriage-return redraws."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(**options: Any):
    """A tqdm bar with `options` (total, desc, unit, disable, ...), written line by line off a terminal."""
    from tqdm import tqdm

    stream = sys.stderr
    if stream.isatty():
        options.setdefault("dynamic_ncols", True)
    else:
        options.setdefault("mininterval", 30.0)
        options.update(file=_Lines(stream), dynamic_ncols=False, ncols=100)
    return tqdm(**options)


class _Lines:
    """A stream for tqdm that turns each redraw ("\\r" + bar) into a line of its own."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip("\n")
        if line.strip():
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()
