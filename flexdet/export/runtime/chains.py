"""The phase-shifted chains schedule: detection at any output rate with every step as training showed it.

Output k of a stream at R Hz comes from recurrent state k mod n, n = round(R x window) (9 at 180 Hz for a 50 ms
model, 1 at the trained rate), each state stepped only at its own outputs on the trained window: a state always
advances by one trained period and sees one trained window. Costs: one network step per output (as a stream at R
Hz), n states held, one step's latency; frames are encoded once and shared (the frame maps depend on the frame
alone). `flexdet eval --schedule chains` scores the same schedule with the chains side by side as one batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flexdet.data.clock import Rate, exact_rate
from flexdet.errors import ConfigError
from flexdet.export.runtime.streaming import StreamingRuntime


def chain_count(rate_hz: Rate, window_us: int) -> int:
    """States the schedule holds at `rate_hz`: the whole number of output periods nearest the trained window
    (9 at 180 Hz for 50 ms, 1 at 20 Hz), at least 1."""
    return max(1, round(exact_rate(rate_hz) * int(window_us) / 1_000_000))


class ChainedRuntime:
    """A StreamingRuntime run by the chains schedule at `rate_hz`: `step` takes the events of the trained window
    ending at each output instant (as the demo's windows are) and returns what `StreamingRuntime.step` returns;
    everything else is the runtime's."""

    def __init__(self, runtime: StreamingRuntime, rate_hz: Rate) -> None:
        self.runtime = runtime
        self.count = chain_count(rate_hz, runtime.spec.window_us)
        backend = runtime.backend
        if self.count > 1 and (not hasattr(backend, "frame_keys") or getattr(backend, "_graph", None) is not None):
            raise ConfigError(f"the chains schedule switches between {self.count} states; the {runtime.backend_name} "
                              f"backend{' with CUDA graphs' if getattr(backend, '_graph', None) is not None else ''} "
                              f"holds one in place: use onnxruntime or torch (without CUDA graphs), or the stream "
                              f"schedule")
        self.reset()

    def reset(self, batch_size: int = 1, sequence: str = "") -> None:
        """Start a new sequence: every chain at the zero state, no frame yet (one stream)."""
        self.runtime.reset(batch_size, sequence)
        self._states = [self.runtime.state] * self.count
        self._steps = 0

    def step(self, events: np.ndarray, t_end: int | None = None, frame: np.ndarray | None = None,
             index: int | None = None) -> dict[str, np.ndarray]:
        """One output: chain `index` mod n (default: the next one) stepped on this window (a new `frame` is kept
        for every chain); a caller that drops outputs passes their index, so each chain keeps its phase."""
        chain = (self._steps if index is None else int(index)) % self.count
        if self.count > 1:
            self.runtime.restore(self._states[chain], keep_frame=True)
        out = self.runtime.step(events, t_end, frame)
        self._states[chain] = self.runtime.state
        self._steps += 1
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)
