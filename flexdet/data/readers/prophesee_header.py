"""The ASCII '%' header of Prophesee DAT and RAW files, and the sensor-size rule built on it.

Sensor size rule (first that applies): an explicit override; the header (`% Width`/`% Height`,
`% format ...;width=..;height=..`, `% geometry WxH`); for RAW files a table of known cameras keyed by
`plugin_name` / `sensor_generation`. Otherwise the size is unknown and `Recording.width` raises
SensorSizeError: the largest coordinate seen is never taken as the sensor size (a crop such as N-CARS
would silently become a tiny sensor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from flexdet.errors import FormatError

MAX_HEADER_BYTES = 1 << 20

# Known cameras: substring of the plugin name or sensor generation -> (width, height).
KNOWN_SENSORS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("imx636", (1280, 720)), ("imx646", (1280, 720)), ("gen41", (1280, 720)), ("gen4", (1280, 720)),
    ("imx637", (640, 512)), ("genx320", (320, 320)), ("imx8", (320, 320)),
    ("gen31", (640, 480)), ("gen3", (640, 480)),
)
_GENERATION_SENSORS = {"4.1": (1280, 720), "4.0": (1280, 720), "4": (1280, 720), "3.1": (640, 480),
                       "3.0": (640, 480), "3": (640, 480), "320": (320, 320)}


@dataclass
class PropheseeHeader:
    """Header key/values and where the binary body starts."""

    fields: dict[str, str] = field(default_factory=dict)
    body_offset: int = 0

    def sensor_size(self) -> tuple[tuple[int, int] | None, str]:
        """(width, height) stated by the header or known for its camera, and where it came from."""
        width, height = self.fields.get("width"), self.fields.get("height")
        if width and height and width.isdigit() and height.isdigit():
            return (int(width), int(height)), "header"
        fmt = self.fields.get("format", "")
        found = dict(re.findall(r"(width|height)=(\d+)", fmt))
        if "width" in found and "height" in found:
            return (int(found["width"]), int(found["height"])), "header"
        geometry = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", self.fields.get("geometry", ""))
        if geometry:
            return (int(geometry.group(1)), int(geometry.group(2))), "header"
        plugin = self.fields.get("plugin_name", "").lower()
        for key, size in KNOWN_SENSORS:
            if key in plugin:
                return size, f"known camera ({self.fields['plugin_name']})"
        generation = self.fields.get("sensor_generation", "").strip()
        if generation in _GENERATION_SENSORS:
            return _GENERATION_SENSORS[generation], f"known sensor generation {generation}"
        return None, "unknown"


def read_header(path: Path, stop_at_end_line: bool) -> PropheseeHeader:
    """Parse the '%' lines at the start of `path`; the body starts after them (or after '% end').

    RAW headers end with '% end' (`stop_at_end_line`); DAT headers end at the first line that does not
    start with '%'. Keys are lower-cased; '% key value' lines give fields[key] = value.
    """
    header = PropheseeHeader()
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES)
    pos = 0
    while pos < len(head) and head[pos:pos + 1] == b"%":
        newline = head.find(b"\n", pos)
        if newline < 0:
            raise FormatError(path, "header line without a line end (truncated header?)", offset=pos)
        try:
            line = head[pos + 1:newline].decode("ascii").strip()
        except UnicodeDecodeError:
            raise FormatError(path, "header line is not ASCII text", offset=pos) from None
        pos = newline + 1
        if stop_at_end_line and line == "end":
            break
        key, _, value = line.partition(" ")
        if key:
            header.fields.setdefault(key.lower(), value.strip())
    else:
        if pos >= MAX_HEADER_BYTES:
            raise FormatError(path, f"header longer than {MAX_HEADER_BYTES} bytes", offset=pos)
    header.body_offset = pos
    return header


def prophesee_label_path(path: Path) -> Path:
    """Where Prophesee datasets keep the boxes of a recording: `<name>_td.dat` -> `<name>_bbox.npy`,
    otherwise `<stem>_bbox.npy` beside it."""
    stem = path.name[:-len("_td.dat")] if path.name.endswith("_td.dat") else path.stem
    return path.with_name(f"{stem}_bbox.npy")
