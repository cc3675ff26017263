"""One typed config, the single source of truth for a run: defaults, then TOML, then CLI flags.

The resolved config is written to every run folder as `config.toml`, and
`fastcls run runs/x/config.toml` repeats that run from it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from fastcls.errors import ConfigError, did_you_mean
from fastcls.flags import GROUPS, Flag, flag_of
from fastcls.sections import (
    BAD_IMAGE_POLICIES,
    BALANCE_CHOICES,
    LEGACY,
    LOADERS,
    AugConfig,
    CnnConfig,
    DataConfig,
    ModelConfig,
    RunConfig,
)
from fastcls.setting_values import check_choice, coerce, drop_none, parse_fraction, read_toml, settings_differences
from fastcls.train_section import LOGGERS, LR_SUGGESTIONS, TrainConfig, parse_log_names

__all__ = [
    "BAD_IMAGE_POLICIES",
    "BALANCE_CHOICES",
    "COMMANDS",
    "FLAGS",
    "LOADERS",
    "LOGGERS",
    "LR_SUGGESTIONS",
    "AugConfig",
    "CnnConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "SettingFlag",
    "TrainConfig",
    "apply_settings",
    "flag",
    "load_config",
    "parse_fraction",
    "parse_log_names",
    "read_toml",
    "route_dropout",
    "settings_differences",
]

COMMANDS = ("train", "finetune")


def route_dropout(flat: dict[str, Any], arch: str) -> dict[str, Any]:
    """A flat `dropout` setting is the cnn's own (`cnn.dropout`) or, for any other arch, the head's
    (`head_dropout`, timm's drop_rate). `arch` may be a comma-separated list (scaling): cnn wins."""
    if "dropout" in flat and "cnn" not in str(arch).split(","):
        flat["head_dropout"] = flat.pop("dropout")
    return flat


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "run": RunConfig}


@dataclass
class Config:
    """A whole command's settings. `Config.from_dict` checks every key and value."""

    command: str = "train"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> Config:
        check_choice("command", self.command, COMMANDS)
        for name in _SECTIONS:
            getattr(self, name).validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        """A TOML-ready dict: None values are left out, `cnn` only for the cnn arch."""
        out = drop_none(dataclasses.asdict(self))
        if self.model.arch != "cnn":
            out["model"].pop("cnn", None)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        return cls().merged(raw)

    def merged(self, overrides: dict[str, Any]) -> Config:
        """A copy with `overrides` (nested like the TOML) applied and validated."""
        config = copy.deepcopy(self)
        _apply(config, overrides, "")
        return config.validate()

    @staticmethod
    def nest(flat: dict[str, Any]) -> dict[str, Any]:
        """Place flat settings (`epochs=3, blocks=4`, or a flag's own name: `aug`, `runs_dir`) in their
        sections; unknown names are errors."""
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            if key not in _PLACES:
                raise ConfigError(f"unknown setting {key!r}.{did_you_mean(key, _PLACES)}")
            path, name = _PLACES[key]
            target = nested
            for part in path:
                target = target.setdefault(part, {})
            target[name] = value
        return nested

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


def _apply(target: Any, overrides: dict[str, Any], prefix: str) -> None:
    known = {f.name: f for f in fields(target)}
    for (section, old), legacy in LEGACY.items():
        if prefix == f"{section}." and old in overrides:
            if legacy.new in overrides:
                raise ConfigError(
                    f"{old} and {legacy.new} both given; {legacy.new} replaces {old}: keep only {legacy.new}."
                )
            overrides = {k: v for k, v in overrides.items() if k != old} | {legacy.new: legacy.convert(overrides[old])}
    for key, value in overrides.items():
        where = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown setting {where!r}; valid here: {', '.join(known)}.{did_you_mean(key, known)}")
        current = getattr(target, key)
        if isinstance(current, AugConfig) and isinstance(value, str):
            value = {"preset": value}  # `aug = "standard"`, as configs wrote it before the [data.aug] table
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"setting {where!r} must be a table of settings, not {value!r}.")
            copy = dataclasses.replace(current)
            _apply(copy, value, f"{where}.")
            setattr(target, key, copy)
        else:
            setattr(target, key, coerce(where, value, known[key].type))


@dataclass(frozen=True)
class SettingFlag:
    """One setting a flag sets: its flat name (the option's), where it lives (`path`, `field`), its Flag,
    and the type the command line parses."""

    name: str
    path: tuple[str, ...]
    field: str
    flag: Flag
    kind: type

    @property
    def long(self) -> str:
        return self.flag.long_flag(self.name)


def _sections() -> list[tuple[tuple[str, ...], type]]:
    """Every section dataclass with its path in the config: ("train",), ("model", "cnn"), ..."""
    found: list[tuple[tuple[str, ...], type]] = []
    for section, kind in _SECTIONS.items():
        found.append(((section,), kind))
        found += [((section, name), sub) for name, sub in get_type_hints(kind).items() if dataclasses.is_dataclass(sub)]
    return found


def _parsed_type(annotation: Any) -> type:
    """`float | None` -> float: what the command line reads for a field of this type."""
    options = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    return options[0]


def _place(places: dict[str, Any], name: str, where: tuple[tuple[str, ...], str]) -> None:
    if name in places:  # a flat name must say where it goes
        raise ValueError(f"setting {name!r} is declared twice: in {places[name][0]} and {where[0]}")
    places[name] = where


def _index() -> tuple[dict[str, tuple[tuple[str, ...], str]], dict[str, SettingFlag]]:
    """Where each flat setting name goes (a field's name, and its flag's name when that differs), and
    every setting a flag sets."""
    places: dict[str, tuple[tuple[str, ...], str]] = {"command": ((), "command")}
    found: list[SettingFlag] = []
    for path, kind in _sections():
        hints = get_type_hints(kind)
        for f in fields(kind):
            if dataclasses.is_dataclass(hints[f.name]):  # a nested section: its own fields are placed
                continue
            _place(places, f.name, (path, f.name))
            if (meta := flag_of(f)) is not None:
                name = meta.name or f.name
                if name != f.name:
                    _place(places, name, (path, f.name))
                found.append(SettingFlag(name, path, f.name, meta, meta.parse_as or _parsed_type(hints[f.name])))
    for (section, old), legacy in LEGACY.items():
        places[old] = ((section,), old)
        found.append(SettingFlag(old, (section,), old, legacy.flag, legacy.flag.parse_as or str))
    found.sort(key=lambda s: GROUPS.index(s.flag.group))  # stable: declaration order within a group
    return places, {s.name: s for s in found}


_PLACES, FLAGS = _index()  # flat name -> where it goes; option name -> SettingFlag, in --help order
_BY_FIELD = {s.field: s for s in FLAGS.values()}  # `root` -> --runs-dir, `preset` -> --aug


def flag(name: str) -> str:
    """The flag of a setting, for messages: `flag("crop_scale")` is `--crop-scale`, `flag("root")`
    `--runs-dir`. A name no flag sets is spelled as a flag all the same."""
    found = FLAGS.get(name) or _BY_FIELD.get(name)
    return found.long if found is not None else "--" + name.replace("_", "-")


def load_config(path: str | Path) -> Config:
    """Read a config TOML (for example a run's own `config.toml`) into a validated `Config`."""
    return Config.from_dict(read_toml(path))


# -- for other settings dataclasses that reuse these sections (fastcls.pretrain) ----------------
def apply_settings(target: Any, overrides: dict[str, Any], prefix: str = "") -> None:
    """Set `overrides` (nested dicts for nested dataclasses) on a settings dataclass, checking each
    key and coercing each value the way `Config.merged` does."""
    _apply(target, overrides, prefix)
