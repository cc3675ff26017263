"""What every command shares: output consoles, JSON printing, and turning flags into overrides."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from fastcls.model_card import CARD_FILE

__all__ = [
    "DEBUG",
    "console",
    "esc",
    "given",
    "handled",
    "is_follower",
    "json_printed",
    "passed",
    "print_json",
    "repeat_into",
    "reporter_for",
]

DEBUG = {"on": False}  # set by the root `--debug` option


def is_follower() -> bool:
    """A process other than rank 0 of a distributed run (torchrun sets RANK): it prints only errors."""
    import os

    return os.environ.get("RANK", "0") != "0" and "WORLD_SIZE" in os.environ


def handled(function: Callable) -> Callable:
    """Wrap a command: a FastclsError prints one line and exits 1 (Interrupted: 130); Ctrl-C exits 130.

    An error marked `silent` (one every process of a distributed run raised together) is printed
    by rank 0 alone; the other processes exit with the same code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from fastcls.errors import FastclsError

        try:
            return function(*args, **kwargs)
        except FastclsError as exc:
            if DEBUG["on"]:
                raise
            code = getattr(exc, "exit_code", 1)
            if getattr(exc, "silent", False):
                sys.modules["fastcls.train.distributed"].wait_for_leader()
            else:
                print(f"{'interrupted' if code == 130 else 'error'}: {exc}", file=sys.stderr)
            raise typer.Exit(code) from None
        except KeyboardInterrupt:
            if not is_follower():
                print("interrupted: nothing was saved for the unfinished work.", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def console():
    """A rich console on stdout for results (progress goes to stderr)."""
    from rich.console import Console

    return Console(highlight=False)


def esc(value: Any) -> str:
    """User text (a path, a class or file name, an arch) made safe to put inside rich markup:
    `photos [2023]` stays itself instead of losing its brackets, and `[/x]` cannot raise."""
    from rich.markup import escape

    return escape(str(value))


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def json_printed(result: Any, as_json: bool, quiet: bool = False) -> bool:
    """Print `result.to_dict()` as JSON when --json asks for it. True when nothing else is to be shown
    (JSON printed, or --quiet)."""
    if as_json:
        print_json(result.to_dict())
        return True
    return quiet


def print_stopped(line: str, history: list, planned: int, why: str, path: Path, resume: str) -> None:
    """The one line of a run that ended early (Ctrl-C, SIGTERM, --stop-after), with how to finish it."""
    console().print(
        f"[yellow]stopped[/yellow] after epoch {len(history)} of {planned} ({why}): {line}; "
        f"saved to [bold]{esc(path)}[/bold]. Finish it with: {esc(resume)}"
    )


def repeat_into(config_file: Path, name: str | None, out: Path | None) -> dict[str, Any]:
    """The `[run]` settings of `fastcls run CONFIG`: a run's own config.toml repeats into a new folder
    beside it (a fresh dated name unless --name), any other config into --out or its own [run] table."""
    inside_run = (config_file.parent / CARD_FILE).is_file()
    run: dict[str, Any] = {"out": str(out) if out else None}
    if name or inside_run:
        run["name"] = name
    if inside_run:
        run["root"] = str(config_file.parent.parent)
    return run


def reporter_for(quiet: bool):
    """Progress on stderr unless --quiet (JSON goes to stdout, so progress never mixes with it)."""
    from fastcls.reporting import Reporter

    return Reporter("quiet" if quiet else "auto")


def passed(values: dict[str, Any], names: str) -> dict[str, Any]:
    """The options `names` (space-separated) of a command's `locals()`, as the keyword arguments of the
    library call that does the command's work, which takes them under the same names."""
    return {name: values[name] for name in names.split()}


def given(**flags: Any) -> dict[str, Any]:
    """Only the flags the user actually set (Typer defaults are None)."""
    return {k: v for k, v in flags.items() if v is not None}
