"""One setting's value: checked against its range or choices, coerced to its field's type, read from
TOML, compared with an earlier run's. The mechanics under `fastcls.config` (and pretraining's settings)."""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any

from fastcls.errors import ConfigError, did_you_mean

__all__ = ["check_choice", "check_range", "coerce", "drop_none", "parse_fraction", "read_toml", "settings_differences"]


def parse_fraction(value: str | float) -> float:
    """Read `1/16`, `0.0625` or `1` as a float in (0, 1]."""
    try:
        number = float(Fraction(str(value).strip()))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            f"fraction {value!r} is not a number; write it as 1/16 or 0.0625 (a share of train in (0, 1])."
        ) from None
    if not 0 < number <= 1:
        raise ConfigError(f"fraction {value!r} must be in (0, 1], e.g. 1/16 or 0.5.")
    return number


def check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    if value < low or (high is not None and value > high):
        upper = f" and {high}" if high is not None else ""
        raise ConfigError(f"{name}={value!r} is out of range: it must be at least {low}{upper}.")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}.{did_you_mean(value, choices)}")


def drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    return value


def coerce(where: str, value: Any, annotation: Any) -> Any:
    kind = str(annotation)
    if value is None:
        return None
    if kind == "int | str" and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind.startswith("int"):
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return parse_fraction(value) if where.endswith("fraction") else float(value)
        if kind.startswith("str"):
            if not isinstance(value, str | Path):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {where!r} has the wrong type: {value!r} is not {kind}.") from None
    return value


def read_toml(
    path: str | Path, what: str = "config file", hint: str = "", error: type[ConfigError] = ConfigError
) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is `error` naming `what` it should be."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist{hint}.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {str(path)!r} is not valid TOML: {exc}.") from None


def settings_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Each dotted key whose value differs between two nested dicts, as 'key (old then, new now)'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += settings_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')} ({old!r} then, {new!r} now)"]
