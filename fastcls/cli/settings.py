"""The settings a command takes as flags, built from where they are declared: each config field made
with `setting(default, GROUP, help=...)` (fastcls.flags, fastcls.sections) becomes an option
`Annotated[Optional[T], typer.Option(...)]` here.

`takes_settings("train")` gives a command the options of its groups (TAKES), so a new setting is its
config field and the code that uses it; `settings_of` says which commands take which.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

from fastcls.cli.common import given
from fastcls.config import FLAGS, SettingFlag, flag
from fastcls.errors import ConfigError
from fastcls.registry import Registry

# ruff: noqa: UP045  (Typer needs Optional[...] inside Annotated on Python 3.10)
__all__ = [
    "CNN_FLAGS",
    "SETTINGS",
    "TAKES",
    "Setting",
    "flag",
    "group",
    "pick",
    "settings_of",
    "split_lr",
    "takes_settings",
    "with_settings",
]


@dataclass(frozen=True)
class Setting:
    """One setting a command takes as a flag: its name in the flat settings (`Config.nest`), its group,
    its flag, and the `Annotated` type Typer reads (None: not given, so a config file's value stays)."""

    name: str
    group: str
    flag: str
    annotation: Any


def _option(s: SettingFlag) -> Setting:
    option = typer.Option(*s.flag.decls, help=s.flag.help, **s.flag.option)
    return Setting(s.name, s.flag.group, s.long, Annotated[Optional[s.kind], option])


# Every setting a flag sets, in the order of --help (by group, then as declared).
SETTINGS: Registry[Setting] = Registry("setting", {name: _option(s) for name, s in FLAGS.items()})


def group(name: str) -> tuple[str, ...]:
    """The settings of one group, in declaration order: `group("cnn")` is blocks, filters, ..."""
    return tuple(s.name for s in SETTINGS.values() if s.group == name)


CNN_FLAGS = group("cnn")

# The setting groups of each command that trains. sweep and scaling run many trainings from one process,
# so not under torchrun (scale-out), and their own --out names the study's folder (run); scaling's grid
# sets the arch, the init (its own --weights) and the fraction of every cell.
TAKES = {
    "train": ("model", "train", "data", "aug", "cnn", "scale-out", "run"),
    "finetune": ("model", "finetune", "train", "data", "aug", "cnn", "scale-out", "run"),
    "sweep": ("model", "finetune", "train", "data", "aug", "cnn"),
    "scaling": ("finetune", "train", "data", "aug", "cnn"),
}
SET_BY_STUDY = {"scaling": frozenset({"weights", "fraction"})}


def settings_of(command: str) -> tuple[str, ...]:
    """The settings `command` takes as flags, in the order its --help lists them."""
    skip = SET_BY_STUDY.get(command, frozenset())
    return tuple(s.name for s in SETTINGS.values() if s.group in TAKES[command] and s.name not in skip)


def takes_settings(command: str) -> Callable[[Callable], Callable]:
    """Give a command that trains an option for every setting of `command` (see TAKES), before its
    `config_file` parameter; the function receives them in `**settings` (None: not given)."""
    return with_settings(settings_of(command), before="config_file")


def with_settings(names: Iterable[str], before: str) -> Callable[[Callable], Callable]:
    """Give a command function the options of the settings `names`, placed before its parameter `before`
    (those after it become keyword-only); the function receives them in `**settings`."""

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        at = next(i for i, p in enumerate(own) if p.name == before)
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=SETTINGS[name].annotation)
            for name in names
        ]
        after = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[at:]]
        function.__signature__ = signature.replace(parameters=[*own[:at], *added, *after])
        return function

    return decorate


def split_lr(value: str | None) -> dict[str, Any]:
    """`--lr auto` -> lr_find; a number -> lr."""
    if value is None:
        return {}
    if value.strip().lower() == "auto":
        return {"lr_find": True}
    try:
        return {"lr": float(value)}
    except ValueError:
        raise ConfigError(f"--lr {value!r} is neither a number (e.g. 3e-3) nor 'auto'.") from None


def pick(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Flat config settings for the flags in `names` the user set (pass a command's `locals()`)."""
    flat = given(**{name: values[name] for name in names})
    if "lr" in flat:
        flat.update(split_lr(flat.pop("lr")))
    if "data" in flat:
        flat["source"] = flat.pop("data")
    return flat
