"""Lazy package exports (PEP 562): a package lists `name -> module` and each name is imported on first use.

Keeps `import flexdet.data` / `flexdet.models` / ... cheap (no torch, Numba or h5py until needed) while the
public names still live at the package level.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list], list]:
    """Return (`__getattr__`, `__dir__`, `__all__`) for `package` exporting `exports` lazily."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names
