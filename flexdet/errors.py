"""The exceptions flexdet raises: one hierarchy so callers can catch every flexdet failure at once."""

from __future__ import annotations

import os


class FlexdetError(Exception):
    """Base class of every error flexdet raises on purpose."""


class FormatError(FlexdetError):
    """A file is not what its format says: bad header, truncated record, unknown word, bad coordinates.

    The message always names the file and, where it helps, the byte offset or event index.
    """

    def __init__(self, path: os.PathLike[str] | str, problem: str, offset: int | None = None,
                 index: int | None = None) -> None:
        where = ""
        if offset is not None:
            where = f" at byte offset {offset}"
        elif index is not None:
            where = f" at event index {index}"
        super().__init__(f"{os.fspath(path)}: {problem}{where}")
        self.path = os.fspath(path)
        self.problem = problem
        self.offset = offset
        self.index = index


class UnsupportedFormatError(FlexdetError):
    """flexdet does not know how to read this file (unknown suffix or format)."""


class SensorSizeError(FlexdetError):
    """The sensor size of a recording cannot be known from the file; pass it explicitly."""


class MissingDependencyError(FlexdetError):
    """An optional package (tensorrt, dv-processing, ...) is needed for this feature and is not installed."""

    def __init__(self, package: str, feature: str, install_hint: str | None = None) -> None:
        hint = install_hint or f"pip install {package}"
        super().__init__(f"{feature} needs the '{package}' package, which is not installed ({hint}).")
        self.package = package


class ConfigError(FlexdetError):
    """A configuration file or option has a wrong key, type or value."""


class CheckpointError(FlexdetError):
    """A checkpoint file is missing, corrupt, or does not match the model it is loaded into."""
