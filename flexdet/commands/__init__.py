"""The `flexdet` sub-commands: each module adds its arguments and runs one verb."""

from __future__ import annotations

import argparse
import sys


class DeprecatedAlias(argparse.Action):
    """An old flag kept for users' scripts: stores into the new option's destination and says to use the new
    name (on stderr, once per use)."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs) -> None:
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"flexdet: {option_string} is deprecated; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def parse_rates(text: str, option: str = "--rates") -> tuple[float, ...]:
    """Comma-separated detection rates in Hz, each a positive finite number; a ConfigError naming the option
    otherwise (checked before any work starts)."""
    import math

    from flexdet.errors import ConfigError

    try:
        rates = tuple(float(r) for r in text.split(",") if r.strip())
    except ValueError:
        rates = ()
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        raise ConfigError(f"{option} {text!r}: expected comma-separated positive rates in Hz, e.g. 20,60,90,180")
    return rates
