"""Configuration dataclasses from YAML mappings: strict keys, type checks, unions in both spellings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from flexdet.config import apply_overrides, from_dict, load_yaml, save_yaml, to_dict
from flexdet.errors import ConfigError


@dataclass
class Inner:
    rate: float = 20.0
    steps: tuple[int, ...] = (1, 2)


@dataclass
class Outer:
    old_style: Optional[float] = None  # noqa: UP045 (the typing.Union spelling is what this field tests)
    new_style: float | None = None
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize("key", ["old_style", "new_style"])
def test_optional_fields_convert_and_check_in_either_spelling(key):
    value = getattr(from_dict(Outer, {key: 3}), key)
    assert value == 3.0 and isinstance(value, float)
    assert getattr(from_dict(Outer, {key: None}), key) is None
    assert getattr(from_dict(Outer, {key: "1e-3"}), key) == 1e-3  # PyYAML reads 1e-3 (no dot) as a string
    with pytest.raises(ConfigError, match=key):
        from_dict(Outer, {key: "fast"})


def test_unknown_keys_wrong_types_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Outer, {"nmae": "y"})
    with pytest.raises(ConfigError, match="inner.steps"):
        from_dict(Outer, {"inner": {"steps": ["a"]}})
    with pytest.raises(ConfigError, match="inner.rate: expected a number"):
        from_dict(Outer, {"inner": {"rate": True}})
    changed = apply_overrides(Outer(), ["inner.rate=45", "new_style=0.5"])
    assert changed.inner.rate == 45.0 and changed.new_style == 0.5
    save_yaml(changed, tmp_path / "c.yaml")
    assert load_yaml(Outer, tmp_path / "c.yaml") == changed


def test_a_renamed_key_loads_under_its_new_name_with_a_note(capsys):
    from flexdet.training.config import TrainConfig

    saved = to_dict(TrainConfig())
    del saved["data"]["benchmark"]
    saved["data"]["protocol"] = "dsec8"  # a flexdet 0.1.0 checkpoint's configuration
    assert from_dict(TrainConfig, saved).data.benchmark == "dsec8"
    assert "'protocol' is deprecated, use 'benchmark'" in capsys.readouterr().err
    assert apply_overrides(TrainConfig(), ["data.protocol=gen1"]).data.benchmark == "gen1"
    assert "data.protocol: 'protocol' is deprecated" in capsys.readouterr().err
    saved["data"]["benchmark"] = "gen1"
    with pytest.raises(ConfigError, match="same key"):
        from_dict(TrainConfig, saved)
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(TrainConfig(), ["data.protocols=gen1"])
