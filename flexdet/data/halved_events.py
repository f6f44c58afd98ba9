"""A recording's events reduced once, over the whole stream, by integrate-and-fire: the file the geometry rule
"integrate_fire" reads.

FlexEvent halves DSEC before training (scripts/downsample_events.py): every `events/left/events.h5` gets an
`events_2x.h5` beside it, in DSEC's layout, holding the events that made a 2x2 block's counter fire (one counter
per block, carried over the whole file; `downsample_events`' signed rule) with x and y halved and t stored from a
new t_offset, the first kept event. flexdet writes the same file (same x, y, p, t and t_offset; its ms_to_idx
has one more trailing entry, DSEC's `dsec_ms_to_idx`) when it is missing, and reads FlexEvent's own where it is
there. The counters run over the recording from its first event, so no window can be halved alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from flexdet.atomic import folder_writable
from flexdet.data.readers.index import user_cache_path
from flexdet.errors import ConfigError

CHUNK_US = 100_000  # µs of events read, fired and written at a time


def halved_path(events_path: os.PathLike[str] | str, factor: int = 2) -> Path:
    """Where the events of `events_path` reduced by `factor` live: `<stem>_<factor>x.h5` beside it (DSEC:
    `events/left/events_2x.h5`)."""
    events_path = Path(events_path)
    return events_path.with_name(f"{events_path.stem}_{int(factor)}x.h5")


def events_file(events_path: os.PathLike[str] | str, geometry) -> Path:
    """The file a `Geometry` takes its events from: the recording itself, or, when its event_downscale is
    "integrate_fire" (and it scales), the recording's integrate-and-fire file, written first if missing (beside
    the recording, or in the user cache when its folder is read-only)."""
    events_path = Path(events_path)
    if geometry is None or geometry.event_downscale != "integrate_fire" or geometry.scale == 1:
        return events_path
    path = halved_path(events_path, geometry.scale)
    if path.is_file():
        return path
    if not folder_writable(events_path.parent):  # a read-only dataset: the user cache holds the file
        path = user_cache_path(events_path, "halved", f"_{int(geometry.scale)}x.h5")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            return path
    return write_halved(events_path, path, geometry.scale)


def write_halved(events_path: os.PathLike[str] | str, out_path: os.PathLike[str] | str | None = None,
                 factor: int = 2, chunk_us: int = CHUNK_US) -> Path:
    """Write the recording's events reduced by `factor` (integrate-and-fire, counters carried over the whole
    file) to `out_path` (default `halved_path`) in DSEC's layout, atomically, with a progress bar; returns the
    path. The sensor becomes ceil(width / factor) x ceil(height / factor)."""
    from flexdet.data.readers import open_recording
    from flexdet.data.representations.downsample import downsample_events, downsampled_size
    from flexdet.data.writers import dsec_h5_writer
    from flexdet.progress import progress_bar

    events_path = Path(events_path)
    out_path = halved_path(events_path, factor) if out_path is None else Path(out_path)
    if int(factor) < 2:
        raise ConfigError(f"integrate-and-fire reduction needs a factor >= 2, got {factor}")
    with open_recording(events_path) as recording:
        width, height = recording.width, recording.height
        low_height, low_width = downsampled_size(height, width, factor)
        state = np.zeros((1, low_height, low_width), np.int32)
        with dsec_h5_writer(out_path, width=low_width, height=low_height) as writer, \
                progress_bar(total=recording.num_events, desc=f"halving {events_path.name}", unit="ev",
                             unit_scale=True) as bar:
            for start in range(int(recording.t_start), int(recording.t_end), int(chunk_us)):
                events = recording.read(start, min(start + int(chunk_us), int(recording.t_end)))
                writer.append(downsample_events(events, height, width, factor, state=state))
                bar.update(len(events))
    return out_path
