"""From a source's chunks to detection windows, through a bounded queue to the model.

A producer thread reads the source, cuts detection windows (step k ends at t0 + k / rate exactly, in
integer µs; each window is the model's window length) and puts them into a `WindowQueue` of fixed size.
When the model falls behind, the queue drops the oldest window or merges it into the newest (policy), and
counts it: memory never grows, and the model always works on recent data.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from flexdet.data.clock import StepClock, exact_rate
from flexdet.data.events import empty_events
from flexdet.data.input_spec import frame_bound
from flexdet.demo.sources import EventSource, Pacer, SourceChunk, SourceEnded, TimedFrame
from flexdet.errors import ConfigError, FlexdetError

OVERLOAD_POLICIES = ("drop", "merge")


@dataclass
class StepInput:
    """One detection step: events of [t_start, t_end), the model's frame (the input specification's frame rule),
    the display frame (latest before t_end), how many later steps were merged into it, and when it was ready."""

    index: int
    t_start: int
    t_end: int
    events: np.ndarray
    model_frame: TimedFrame | None
    display_frame: TimedFrame | None
    ready_time: float
    merged: int = 0


def merge_steps(older: StepInput, newer: StepInput) -> StepInput:
    """One step covering both: the union of their events, ending at the newer step's end."""
    head = older.events[older.events["t"] < newer.t_start] if len(older.events) else older.events
    events = np.concatenate((head, newer.events)) if len(head) else newer.events
    return StepInput(newer.index, min(older.t_start, newer.t_start), newer.t_end, events, newer.model_frame,
                     newer.display_frame, newer.ready_time, older.merged + newer.merged + 1)


class WindowAssembler:
    """Cuts detection windows out of source chunks, keeping only the events and frames still needed."""

    def __init__(self, window_us: int, clock: StepClock, stop_at: int | None = None,
                 frame_rule: str = "latest_at_start") -> None:
        if int(window_us) < 1:
            raise ConfigError(f"window length must be >= 1 µs, got {window_us}")
        frame_bound(frame_rule, 0, 1)  # refuse an unknown rule here, not at the first frame
        self.window_us = int(window_us)
        self.frame_rule = frame_rule
        self.clock = clock
        self.stop_at = stop_at
        self._events = empty_events(0)
        self._frames: deque[TimedFrame] = deque()
        self._delivered = clock.t0
        self.steps_made = 0

    @property
    def finished(self) -> bool:
        """Whether the last step before `stop_at` has been made."""
        return self.stop_at is not None and self.clock.next_end > self.stop_at

    def feed(self, chunk: SourceChunk) -> list[StepInput]:
        """Add a chunk; return the steps whose end it reaches (in order)."""
        if len(chunk.events):
            self._events = np.concatenate((self._events, chunk.events)) if len(self._events) else chunk.events
        self._frames.extend(chunk.frames)
        self._delivered = max(self._delivered, int(chunk.t_end))
        steps = []
        now = time.perf_counter()
        while not self.finished and self.clock.next_end <= self._delivered:
            t_end = self.clock.advance()
            t_start = t_end - self.window_us
            t = self._events["t"]
            lo, hi = np.searchsorted(t, [t_start, t_end])
            steps.append(StepInput(self.steps_made, t_start, t_end, self._events[lo:hi],
                                   self._latest_frame(*frame_bound(self.frame_rule, t_start, t_end)),
                                   self._latest_frame(t_end, inclusive=False), now))
            self.steps_made += 1
        self._forget_before(self.clock.next_end - self.window_us)
        return steps

    def _latest_frame(self, t: int, inclusive: bool) -> TimedFrame | None:
        best = None
        for frame in self._frames:
            if frame[0] < t or (inclusive and frame[0] == t):
                best = frame
        return best

    def _forget_before(self, t: int) -> None:
        cut = int(np.searchsorted(self._events["t"], t))
        if cut:
            self._events = self._events[cut:].copy() if cut > len(self._events) // 2 else self._events[cut:]
        while len(self._frames) > 1 and self._frames[1][0] <= t:
            self._frames.popleft()


class WindowQueue:
    """A bounded queue of steps. `put(block=False)` never waits: when full it drops the oldest step
    ("drop") or merges the newest queued step into the incoming one ("merge"), and counts it."""

    def __init__(self, maxsize: int = 2, policy: str = "drop") -> None:
        if maxsize < 1:
            raise ConfigError(f"queue size must be >= 1, got {maxsize}")
        if policy not in OVERLOAD_POLICIES:
            raise ConfigError(f"overload policy must be one of {OVERLOAD_POLICIES}, got {policy!r}")
        self.maxsize, self.policy = maxsize, policy
        self._items: deque[StepInput] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.merged = 0
        self.max_length = 0
        self.end_reason: str | None = None
        self.error: BaseException | None = None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, step: StepInput, block: bool = False) -> None:
        """Queue a step; with block=True wait for room (lossless replay), else apply the overload policy."""
        with self._cond:
            if block:
                while len(self._items) >= self.maxsize and self.end_reason is None:
                    self._cond.wait(0.05)
                step.ready_time = time.perf_counter()  # latency counts from entering the queue
            elif len(self._items) >= self.maxsize:
                if self.policy == "drop":
                    self._items.popleft()
                    self.dropped += 1
                else:
                    step = merge_steps(self._items.pop(), step)
                    self.merged += 1
            self._items.append(step)
            self.max_length = max(self.max_length, len(self._items))
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> StepInput | None:
        """The oldest step; None once the queue is closed and empty (or on timeout)."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        with self._cond:
            while not self._items:
                if self.end_reason is not None:
                    return None
                remaining = None if deadline is None else deadline - time.perf_counter()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(0.05 if remaining is None else min(0.05, remaining))
            step = self._items.popleft()
            self._cond.notify_all()
            return step

    def close(self, reason: str, error: BaseException | None = None) -> None:
        """No more steps will come; `reason` says why (end of source, duration reached, error)."""
        with self._cond:
            if self.end_reason is None:
                self.end_reason, self.error = reason, error
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self.end_reason is not None


class Producer(threading.Thread):
    """The source thread: reads chunks, cuts windows, fills the queue; closes it with the reason it ended."""

    def __init__(self, source: EventSource, queue: WindowQueue, window_us: int, rate_hz: float | str,
                 pacer: Pacer, duration_s: float | None = None, lossless: bool = False,
                 current_rate: Callable[[], Fraction] | None = None, frame_rule: str = "latest_at_start") -> None:
        super().__init__(name="flexdet-demo-source", daemon=True)
        self.source, self.queue, self.window_us = source, queue, int(window_us)
        self.rate = exact_rate(rate_hz)
        self.pacer, self.duration_s, self.lossless = pacer, duration_s, lossless
        self.current_rate = current_rate
        self.frame_rule = frame_rule
        self.events_seen = 0

    def run(self) -> None:
        try:
            self._produce()
        except SourceEnded as exc:
            self.queue.close(str(exc))
        except FlexdetError as exc:
            self.queue.close(f"source error: {exc}", exc)
        except Exception as exc:  # a camera driver or codec failing mid-stream: report it, never hang
            self.queue.close(f"source failed: {type(exc).__name__}: {exc}", exc)

    def _produce(self) -> None:
        assembler: WindowAssembler | None = None
        for chunk in self.source.chunks(self.pacer):
            if self.pacer.stop.is_set():
                self.queue.close("stopped")
                return
            if assembler is None:
                t0 = self.source.t_start if self.source.t_start is not None else int(chunk.t_end)
                stop_at = None if self.duration_s is None else t0 + int(round(self.duration_s * 1e6))
                assembler = WindowAssembler(self.window_us, StepClock(t0, self.rate), stop_at, self.frame_rule)
            if self.current_rate is not None and self.current_rate() != assembler.clock.rate:
                assembler.clock.set_rate(self.current_rate())
            self.events_seen += len(chunk.events)
            for step in assembler.feed(chunk):
                self.queue.put(step, block=self.lossless)
            if assembler.finished:
                self.queue.close(f"duration reached ({self.duration_s} s, {assembler.steps_made} steps)")
                return
        self.queue.close("source ended")
