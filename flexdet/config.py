"""Configuration as dataclasses backed by YAML files, with strict key and type checking.

Every configurable part of flexdet (model presets, training recipes, simulator scenes) is a dataclass;
this module turns YAML mappings into those dataclasses (nested ones included) and back, and applies
`key=value` overrides from the command line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from flexdet.atomic import atomic_write_text
from flexdet.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    data = _renamed(cls, data, source)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(fields)}")
    missing = sorted(name for name, f in fields.items() if name not in data and f.init
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{source}: missing key(s) {missing} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{source}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a dataclass's own checks (__post_init__) do not know the file
        if str(exc).startswith(source):
            raise
        raise ConfigError(f"{source}: {exc}") from None


def to_dict(obj: Any) -> dict:
    """Turn a dataclass (nested ones included) into plain YAML-friendly Python values."""
    return _plain(dataclasses.asdict(obj))


def load_yaml(cls: type[T], path: os.PathLike[str] | str) -> T:
    """Read a YAML file into dataclass `cls`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    return from_dict(cls, parse_yaml(text, str(path)) or {}, source=str(path))


MAX_YAML_NODES = 100_000  # values in a document with every alias expanded; flexdet's configs hold < 1,000


def parse_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load(text)` whose document, aliases expanded, holds at most MAX_YAML_NODES values (a 1 KB
    alias bomb stands for billions); any YAML problem is a one-line ConfigError naming `source`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        count = _expanded_nodes(node, {})
        if count > MAX_YAML_NODES:
            raise ConfigError(f"{source}: YAML document expands to {count} values through aliases "
                              f"(at most {MAX_YAML_NODES})")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_nodes(node: yaml.Node, counts: dict[int, int]) -> int:
    """Values under `node` with aliases expanded (each shared node counted once per reference, memoised)."""
    if id(node) not in counts:
        counts[id(node)] = 0  # a recursive alias counts as one value (construction then fails or stays finite)
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else []
        counts[id(node)] = 1 + sum(_expanded_nodes(child, counts) for child in children)
    return counts[id(node)]


def save_yaml(obj: Any, path: os.PathLike[str] | str) -> None:
    """Write a dataclass to a YAML file atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def apply_overrides(obj: T, overrides: list[str] | Mapping[str, Any]) -> T:
    """Return a copy of dataclass `obj` with `key=value` (dotted keys reach nested dataclasses) applied."""
    data = to_dict(obj)
    items = overrides.items() if isinstance(overrides, Mapping) else (_split(o) for o in overrides)
    for key, value in items:
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
            target = target[part]
        if parts[-1] not in target:
            new = _new_name(obj, parts)
            if new is None:
                raise ConfigError(f"override {key!r}: unknown key; known: {sorted(target)}")
            print(f"override {key}: {parts[-1]!r} is deprecated, use {new!r}", file=sys.stderr)
            parts[-1] = new
        target[parts[-1]] = parse_yaml(value, f"override {key}") if isinstance(value, str) else value
    return from_dict(type(obj), data, source="overrides")


def _renamed(cls: type, data: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """`data` with the keys `cls.RENAMED_KEYS` (old name -> new name) lists under their new names, each with a
    deprecation note; both names at once is an error."""
    renames = getattr(cls, "RENAMED_KEYS", {})
    if not any(old in data for old in renames):
        return data
    out = dict(data)
    for old, new in renames.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{source}: {old!r} and {new!r} are the same key (its old and new name); keep {new!r}")
            print(f"{source}: {old!r} is deprecated, use {new!r}", file=sys.stderr)
            out[new] = out.pop(old)
    return out


def _new_name(obj: Any, parts: list[str]) -> str | None:
    """The current name of the renamed key `parts` of dataclass `obj` (None if it is no renamed key)."""
    cls = type(obj)
    for part in parts[:-1]:
        cls = typing.get_type_hints(cls).get(part)
        if cls is None or not dataclasses.is_dataclass(cls):
            return None
    return getattr(cls, "RENAMED_KEYS", {}).get(parts[-1])


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, value = item.split("=", 1)
    return key.strip(), value


def _convert(hint: Any, value: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] / Union[X, Y] and X | None
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{source}: {value!r} matches none of {args}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{source}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, source) for a, v in zip(args, value))
        inner = args[0] if args else Any
        items = [_convert(inner, v, source) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float:
        return _to_float(value, source)
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{source}: expected {hint.__name__}, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{source}: expected int, got {value!r}")
    return value


def _to_float(value: Any, source: str) -> float:
    """A finite number, or a string that spells one: PyYAML (YAML 1.1) reads `1e-3` without a dot as a string."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None:
        raise ConfigError(f"{source}: expected a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{source}: expected a finite number, got {value!r}")
    return number


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
