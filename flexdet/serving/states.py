"""Each live stream's recurrent state on the server, keyed by correlation id, with the two limits a server
needs: at most `max_streams` at once, and a stream silent for `idle_timeout_s` is freed (its client died)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from flexdet.serving.errors import ServerError

State = dict[str, np.ndarray]
UNKNOWN_STREAM = "no state for stream"  # clients recognise a lost stream by this phrase


class StreamStates:
    """Thread-safe map correlation id -> state tensors (batch 1 each) with last-use times."""

    def __init__(self, max_streams: int, idle_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_streams = int(max_streams)
        self.idle_timeout_s = float(idle_timeout_s)
        self.clock = clock
        self._states: dict[int, State] = {}
        self._used: dict[int, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)

    def start(self, stream: int, state: State) -> None:
        """Begin (or restart) `stream` with `state`; ServerError when max_streams others are live."""
        with self._lock:
            if stream not in self._states and len(self._states) >= self.max_streams:
                raise ServerError(f"stream {stream} refused: the server already serves {self.max_streams} streams "
                                  f"(--max-streams {self.max_streams}); close one or start the server with more")
            self._states[stream] = state
            self._used[stream] = self.clock()

    def get(self, stream: int) -> State:
        """The state of a live stream; ServerError naming the stream when there is none."""
        with self._lock:
            if stream not in self._states:
                raise ServerError(f"{UNKNOWN_STREAM} {stream}: it was never started, ended, or idled out after "
                                  f"{self.idle_timeout_s:g} s; start a new sequence")
            self._used[stream] = self.clock()
            return self._states[stream]

    def put(self, stream: int, state: State) -> None:
        """Store the state after a step (only while the stream is live: an idle-out in between wins)."""
        with self._lock:
            if stream in self._states:
                self._states[stream] = state
                self._used[stream] = self.clock()

    def end(self, stream: int) -> None:
        """Free `stream` (its client closed it)."""
        with self._lock:
            self._states.pop(stream, None)
            self._used.pop(stream, None)

    def evict_idle(self) -> list[int]:
        """Free every stream unused for longer than the idle timeout; their ids."""
        now = self.clock()
        with self._lock:
            idle = [s for s, used in self._used.items() if now - used > self.idle_timeout_s]
            for stream in idle:
                del self._states[stream], self._used[stream]
        return idle
