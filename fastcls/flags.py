"""A setting's command-line face, declared on its config field: `setting(default, GROUP, help=...)`.

A setting is declared once, as a field of a config section (fastcls.sections). The field's metadata
carries its flag, help text and group; the commands that train (fastcls.cli.settings) build their
options from those fields, and `flag(name)` names the flag in any message, library or CLI. The
group says which commands take the setting (`fastcls.cli.settings.TAKES`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AUG",
    "CNN",
    "DATA",
    "FINETUNE",
    "GROUPS",
    "MODEL",
    "RUN",
    "SCALE_OUT",
    "TRAIN",
    "Flag",
    "field_flag",
    "flag_of",
    "setting",
]

# The groups, in the order --help lists them.
GROUPS = ("model", "finetune", "train", "data", "aug", "cnn", "scale-out", "run")
MODEL, FINETUNE, TRAIN, DATA, AUG, CNN, SCALE_OUT, RUN = GROUPS


@dataclass(frozen=True)
class Flag:
    """How a setting is given on the command line.

    `decls` are Typer's declarations when the flag is not the field's name spelled as a flag
    (`"--bn/--no-bn"`, `"-a"`);
    `parse_as` is the type the command line reads when it is not the field's own (`lr` reads `auto` or
    a number); `name` is the option's name in the flat settings when it is not the field's (`aug` sets
    `preset`); `option` holds other `typer.Option` keywords (`min=0`)."""

    group: str
    help: str
    decls: tuple[str, ...] = ()
    parse_as: type | None = None
    name: str | None = None
    option: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"setting group {self.group!r} is not one of {', '.join(GROUPS)}")

    def long_flag(self, name: str) -> str:
        """The long flag, as messages name it: `--crop-scale`, `--freeze-bn` for `--freeze-bn/--train-bn`."""
        declared = [d for d in self.decls if d.startswith("--")]
        return declared[0].split("/")[0] if declared else "--" + (self.name or name).replace("_", "-")


def setting(
    default: Any = dataclasses.MISSING,
    group: str = "",
    *decls: str,
    help: str,
    factory: Any = dataclasses.MISSING,
    parse_as: type | None = None,
    name: str | None = None,
    **option: Any,
) -> Any:
    """A config field that is also a command-line option of `group` (see `Flag`)."""
    meta = {"flag": Flag(group, help, decls, parse_as, name, option)}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> Flag | None:
    """The field's Flag, or None for a setting no flag sets (a config file still does)."""
    return f.metadata.get("flag")


def field_flag(section: type, name: str) -> str:
    """The flag of field `name` of a section dataclass, for that section's own messages (messages
    elsewhere use `fastcls.config.flag`, which knows every section)."""
    found = flag_of(next(f for f in dataclasses.fields(section) if f.name == name))
    if found is None:
        raise ValueError(f"{section.__name__}.{name} has no flag")
    return found.long_flag(name)
