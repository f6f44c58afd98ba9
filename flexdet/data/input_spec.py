"""The input specification: everything that turns sensor events (and the latest RGB frame) into one step's model
input, stored with every checkpoint and export and read back by every consumer.

One function builds a step's input from events, `InputSpec.model_inputs`; training clips, evaluation,
pseudo-labelling, the streaming runtime and the demo all call it, so a model sees the same tensor for the same
window whichever path feeds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexdet.data.geometry import Geometry
from flexdet.data.representations.kinds import (
    COUNTING,
    ENCODINGS,
    KINDS,
    channels_per_window,
    model_input_dtype,
)
from flexdet.errors import CheckpointError, ConfigError

TIME_NORMS = ("window", "events")
SUB_WINDOWS = ("last_half", "hashed")
FRAME_RULES = ("latest_at_start", "latest_before_end")
# A model input is sized by the sensor it was made for: refused past these when a model or export is loaded
# (its runtime allocates a (channels, height, width) input, histograms and state for that size). The largest
# event sensors made are 1280 px on a side (Prophesee / Sony IMX636 1280x720, Samsung DVS Gen4 1280x960; DSEC
# and most datasets are 640x480 or smaller): 8192 px a side is 6.4x that, 2 GiB one step's input, i.e. up to
# 8192x8192 at 32 uint8 channels (8 float32 ones), or 1280x720 at 2330 uint8 channels.
MAX_SENSOR_SIDE = 8192
MAX_INPUT_BYTES = 2**31
EVENT_ENCODING = ENCODINGS["stacked_histogram"]
FRAME_ENCODING = "RGB uint8 / 255 -> [0, 1]; ImageNet mean/std applied inside the network"


@dataclass
class InputSpec:
    """How one detection step's input is made.

    Events of the window [end - length, end) (or [.., end] with `end_inclusive`, as RVT's preprocessing) are
    mapped through `geometry` and turned into the `representation`: "stacked_histogram" (RVT's; `bins` time bins
    per polarity counted and saturated at `clip`, uint8), "event_frame" (counts per polarity saturated at
    `clip`, uint8), "voxel_grid" (`bins` signed time bins, float32) or "time_surface" (per polarity, the decay
    exp(-age / (window / 2)) of each pixel's latest event, float32). `time_norm`: "window" times events by the
    window bounds (flexdet), "events" by the window's first and last event (RVT; with the geometry's
    "nearest_exact" downscale, of all the window's events in the kept sensor rows, sampled or not, as RVT's
    full-resolution histogram has them; counting representations only). `window_us` is the window a
    stream at the trained rate uses; any other window length can be asked for. With `dual_windows` a second
    histogram of a sub-window follows on the channel axis: `sub_window` "last_half", the half nearest the
    prediction instant (flexdet), or "hashed", FlexEvent's: round(ratio * length) long at an offset drawn from
    blake2b of (seed, sequence name, window start, window end), so a window always gets the same sub-window.
    `end_grid_us` (0: off): a window ends at the last multiple of it, counted from the recording's time origin
    (DSEC's t_offset), at or before its end, in both views (the sub-window is still placed in the uncut window):
    FlexEvent reads DSEC through the per-millisecond index ms_to_idx (1000), which leaves out the window's last
    partial millisecond. `frame_rule` pairs a window with a frame (`frame_bound`): "latest_at_start", the latest
    at or before its start (how training pairs label-aligned windows), or "latest_before_end", the freshest one
    delivered before its end (the same frame for windows ending on a frame instant, a fresher one between them).
    """

    geometry: Geometry
    bins: int = 10
    clip: int = 10
    time_norm: str = "window"
    end_inclusive: bool = False
    window_us: int = 50_000
    dual_windows: bool = False
    sub_window: str = "last_half"
    sub_window_ratio: float = 0.5
    sub_window_seed: int = 42
    end_grid_us: int = 0
    representation: str = "stacked_histogram"
    frame_rule: str = "latest_at_start"
    event_encoding: str = EVENT_ENCODING
    frame_encoding: str = FRAME_ENCODING

    def __post_init__(self) -> None:
        if isinstance(self.geometry, dict):
            from flexdet.config import from_dict

            self.geometry = from_dict(Geometry, self.geometry, source="input.geometry")
        if self.representation not in KINDS:
            raise ConfigError(f"input.representation must be one of {KINDS}, got {self.representation!r}")
        if self.representation not in COUNTING and self.time_norm == "events" and self.geometry.samples_events:
            raise ConfigError(f"input.representation {self.representation}: time_norm 'events' with the "
                              f"'nearest_exact' event downscale (RVT's rule) applies to counting representations only")
        if self.event_encoding in ENCODINGS.values():  # a representation's own text: this representation's
            self.event_encoding = ENCODINGS[self.representation]
        for name, low, high in (("bins", 1, 1024), ("clip", 1, 255), ("window_us", 1, 1 << 40),
                                ("end_grid_us", 0, 1 << 40)):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or not low <= int(value) <= high:
                raise ConfigError(f"input.{name} must be a whole number in [{low}, {high}], got {value!r}")
        if self.time_norm not in TIME_NORMS:
            raise ConfigError(f"input.time_norm must be one of {TIME_NORMS}, got {self.time_norm!r}")
        if self.sub_window not in SUB_WINDOWS or not 0 < float(self.sub_window_ratio) <= 1:
            raise ConfigError(f"input.sub_window must be one of {SUB_WINDOWS} with sub_window_ratio in (0, 1], got "
                              f"{self.sub_window!r}, {self.sub_window_ratio!r}")
        if self.frame_rule not in FRAME_RULES:
            raise ConfigError(f"input.frame_rule must be one of {FRAME_RULES}, got {self.frame_rule!r}")

    # ----- sizes -----
    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self.geometry.size

    @property
    def sensor_size(self) -> tuple[int, int]:
        """(width, height) of the sensor whose events this specification takes."""
        return self.geometry.sensor_width, self.geometry.sensor_height

    @property
    def views(self) -> int:
        return 2 if self.dual_windows else 1

    @property
    def channels_per_view(self) -> int:
        """Channels of one window's representation (2 * bins for a stacked histogram)."""
        return channels_per_window(self.representation, self.bins)

    @property
    def channels(self) -> int:
        """Channels of one step's input: the representation's per view."""
        return self.channels_per_view * self.views

    @property
    def input_dtype(self) -> np.dtype:
        """The array type of one step's input: uint8 counts, or float32 for a voxel grid or time surface."""
        return model_input_dtype(self.representation)

    def check_size(self, source: str) -> None:
        """Refuse (CheckpointError naming `source` and the field) a sensor side past MAX_SENSOR_SIDE or a step
        input of more than MAX_INPUT_BYTES: what a loaded model's or export's own specification may ask its
        runtime to allocate is bounded by what a real sensor needs, not by the file."""
        for name, value in (("sensor_width", self.geometry.sensor_width),
                            ("sensor_height", self.geometry.sensor_height)):
            if int(value) > MAX_SENSOR_SIDE:
                raise CheckpointError(f"{source}: input.geometry.{name} = {value} is past {MAX_SENSOR_SIDE} px, the "
                                  f"most a sensor side may have (the largest event sensors are 1280 px wide)")
        width, height = self.size
        size = self.channels * width * height * self.input_dtype.itemsize
        if size > MAX_INPUT_BYTES:
            raise CheckpointError(f"{source}: input.bins = {self.bins} ({self.representation}) at {width}x{height} "
                                  f"makes a step input of {size} bytes, past the {MAX_INPUT_BYTES} allowed")

    def replace(self, **changes: Any) -> InputSpec:
        return dataclasses.replace(self, **changes)

    # ----- the one input builder -----
    def model_inputs(self, events: np.ndarray, starts, ends, backwards: bool = False, sequence: str = "",
                     time_origin: int = 0) -> np.ndarray:
        """(N, channels, H, W) inputs (`input_dtype`) of the windows [starts[i], ends[i]) from time-sorted sensor
        events.

        `backwards`: the windows are played in reverse time (time-reversed representations; the dual half window is
        then the first half, the one nearest the prediction instant in the reversed stream). `sequence`: the
        recording's name, which the "hashed" sub-window draws its offset from. `time_origin`: the recording's
        time origin, where `end_grid_us` counts from. Empty windows give zeros.
        """
        from flexdet.data.representations import RepresentationConfig, build_windows
        from flexdet.data.representations.reverse import reverse_window

        starts = np.asarray(starts, np.int64).reshape(-1)
        ends = np.asarray(ends, np.int64).reshape(-1)
        if starts.shape != ends.shape:
            raise ConfigError(f"model_inputs: {len(starts)} window starts for {len(ends)} ends")
        if np.any(ends < starts):
            raise ConfigError("model_inputs: a window ends before it starts")
        width, height = self.size
        timing = None
        if self.geometry.samples_events and self.time_norm == "events":
            timing = self.geometry.cropped(events)["t"]  # bins of the full-resolution window
        events = self.geometry.events(events)
        config = RepresentationConfig(kind=self.representation, bins=self.bins, clip=self.clip,
                                      time_norm=self.time_norm)
        extra = 1 if self.end_inclusive else 0
        views = [(starts, ends)]
        if self.dual_windows:
            views.append(self.sub_windows(starts, ends, backwards, sequence))
        read_end = self.read_end(ends + extra, time_origin)
        planes = []
        for lo, hi in views:
            stop = np.minimum(hi + extra, read_end)
            plane = build_windows(events, height, width, stop, np.maximum(stop - lo, 0), config, timing=timing)
            plane = plane.astype(self.input_dtype, copy=False)  # an event frame's counts fit uint8 (clip <= 255)
            planes.append(reverse_window(plane, self.representation, self.bins) if backwards else plane)
        return planes[0] if len(planes) == 1 else np.concatenate(planes, axis=1)

    def read_end(self, ends: np.ndarray, time_origin: int = 0) -> np.ndarray:
        """Where reading events up to `ends` stops: `ends` itself, or with `end_grid_us` its last grid line from
        `time_origin` at or before it (FlexEvent's ms_to_idx reads)."""
        if not self.end_grid_us:
            return ends
        return time_origin + (ends - time_origin) // self.end_grid_us * self.end_grid_us

    def sub_windows(self, starts: np.ndarray, ends: np.ndarray, backwards: bool = False, sequence: str = ""
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of the second view's windows (see the class docstring)."""
        if self.sub_window == "last_half":
            half = (ends - starts) // 2
            return (starts, starts + half) if backwards else (ends - half, ends)
        lengths = ends - starts
        sub = np.minimum(np.round(lengths * float(self.sub_window_ratio)).astype(np.int64), lengths)
        offsets = np.array([hashed_offset(self.sub_window_seed, sequence, int(a), int(b), int(m))
                            for a, b, m in zip(starts, ends, lengths - sub)], np.int64)
        return starts + offsets, starts + offsets + sub

    # ----- frames and boxes -----
    def frame_index(self, frame_times: np.ndarray, t_start: int, t_end: int) -> int:
        """Index of the frame paired with the window [t_start, t_end) (-1: no frame yet), by `frame_rule`."""
        bound, inclusive = frame_bound(self.frame_rule, t_start, t_end)
        return int(np.searchsorted(frame_times, bound, side="right" if inclusive else "left")) - 1

    def paired_frames(self, frames: np.ndarray, indices) -> np.ndarray:
        """(N, H, W, 3) frames `indices` of an input-size stack, black where the index is -1 (a window before
        the first frame: batched paths cannot leave one column without a frame)."""
        indices = np.asarray(indices, np.int64)
        chosen = frames[np.maximum(indices, 0)]
        chosen[indices < 0] = 0
        return chosen

    def frame_input(self, image: np.ndarray) -> np.ndarray:
        """A sensor-aligned HxWx3 uint8 RGB image at input size."""
        return self.geometry.frame(image)

    def boxes_to_sensor(self, xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy input pixels -> sensor pixels."""
        return self.geometry.boxes_to_sensor(xyxy)


def hashed_offset(seed: int, sequence: str, start: int, end: int, maximum: int) -> int:
    """FlexEvent's sub-window offset in [0, maximum]: blake2b (8 bytes, little-endian) of
    "seed\\0sequence\\0start\\0end" modulo maximum + 1 (data/dsec_utils/dsec_data.py)."""
    import hashlib

    if maximum <= 0:
        return 0
    digest = hashlib.blake2b(f"{seed}\0{sequence}\0{start}\0{end}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (maximum + 1)


def identity_spec(height: int, width: int, **fields: Any) -> InputSpec:
    """A specification whose input is the sensor itself (no crop, no scaling)."""
    return InputSpec(Geometry(int(width), int(height)), **fields)


def legacy_spec(fields: dict, dual_windows: bool = False) -> InputSpec | None:
    """The specification of metadata written before it existed (height, width, bins, clip, window_us,
    dual_windows keys: an identity geometry at the exported size); None without a height and width."""
    if not fields.get("height") or not fields.get("width"):
        return None
    return identity_spec(int(fields["height"]), int(fields["width"]), bins=int(fields.get("bins", 10)),
                         clip=int(fields.get("clip", 10)), window_us=int(fields.get("window_us", 50_000)),
                         dual_windows=bool(fields.get("dual_windows", dual_windows)))


def frame_bound(rule: str, t_start: int, t_end: int) -> tuple[int, bool]:
    """(time, inclusive): the frame `rule` pairs with the window [t_start, t_end) is the latest one at (inclusive)
    or before that time; one function for the datasets' frame stacks and the demo's frame queue."""
    if rule == "latest_before_end":
        return int(t_end), False
    if rule == "latest_at_start":
        return int(t_start), True
    raise ConfigError(f"input.frame_rule must be one of {FRAME_RULES}, got {rule!r}")
