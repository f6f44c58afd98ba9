"""iniVation AEDAT4 files through the `aedat` package (Rust decoder of the LZ4/ZSTD flatbuffer packets).

The event stream is decoded once into memory when the recording opens (AEDAT4 has no time index to
seek with); frames are streamed from a fresh decoder on each `frames()` call so they never all sit in
memory. The first event stream and the first frame stream are used. The decoder aborts the process on
some corrupt files, so `aedat4_check` vets each file first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flexdet.data.readers.aedat4_check import check_aedat4
from flexdet.data.readers.arrays import ArrayRecording, events_from_columns
from flexdet.errors import FormatError, MissingDependencyError

_TO_RGB = {"Gray": "COLOR_GRAY2RGB", "BGR": "COLOR_BGR2RGB", "BGRA": "COLOR_BGRA2RGB", "RGBA": "COLOR_RGBA2RGB"}


def _decoder(path: Path):
    try:
        import aedat
    except ImportError:
        raise MissingDependencyError("aedat", "reading AEDAT4 files") from None
    check_aedat4(path)
    try:
        return aedat.Decoder(str(path))
    except BaseException as exc:  # the Rust extension raises pyo3's PanicException (a BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise FormatError(path, f"not a readable AEDAT4 file ({exc})") from None


def _packets(path: Path, decoder) -> Iterator[dict]:
    """Iterate packets, turning the decoder's failures into FormatError."""
    while True:
        try:
            packet = next(decoder)
        except StopIteration:
            return
        except BaseException as exc:  # PanicException from corrupt packets
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise FormatError(path, f"corrupt AEDAT4 packet ({exc})") from None
        yield packet


class Aedat4Recording(ArrayRecording):
    """AEDAT4 events (in memory) plus streamed frames when the file has a frame stream."""

    def __init__(self, path: Path, width: int | None = None, height: int | None = None) -> None:
        decoder = _decoder(path)
        streams = decoder.id_to_stream()
        event_ids = sorted(i for i, s in streams.items() if s.get("type") == "events")
        frame_ids = sorted(i for i, s in streams.items() if s.get("type") == "frame")
        if not event_ids:
            raise FormatError(path, "AEDAT4 file has no event stream")
        self._event_id = event_ids[0]
        self._frame_id = frame_ids[0] if frame_ids else None
        chunks = [p["events"] for p in _packets(path, decoder)
                  if p.get("stream_id") == self._event_id and "events" in p]
        packed = np.concatenate(chunks) if chunks else np.zeros(0, dtype=[("t", "<u8"), ("x", "<u2"),
                                                                           ("y", "<u2"), ("on", "?")])
        polarity_field = "on" if "on" in packed.dtype.names else "p"
        events, fixes = events_from_columns(path, packed["t"], packed["x"], packed["y"], packed[polarity_field])
        stream = streams[self._event_id]
        stored = (stream.get("width"), stream.get("height"))
        if width is not None or height is not None:
            size = (width if width is not None else stored[0], height if height is not None else stored[1])
            source = "override"
        else:
            size, source = stored, "file"
        super().__init__(path, "aedat4", events, size[0], size[1], source)
        self.time_corrections = fixes

    @property
    def has_frames(self) -> bool:
        return self._frame_id is not None

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t µs, HxWx3 uint8 RGB) for each frame of the first frame stream."""
        import cv2

        if self._frame_id is None:
            yield from super().frames()
            return
        for packet in _packets(self.path, _decoder(self.path)):
            if packet.get("stream_id") != self._frame_id or "frame" not in packet:
                continue
            frame = packet["frame"]
            pixels = np.ascontiguousarray(frame["pixels"])
            conversion = _TO_RGB.get(frame.get("format", "Gray"))
            if pixels.ndim == 2 or conversion:
                pixels = cv2.cvtColor(pixels, getattr(cv2, conversion or "COLOR_GRAY2RGB"))
            yield int(frame["t"]), pixels
