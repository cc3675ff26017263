"""What every command shares: output consoles, JSON printing, and turning flags into overrides."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

__all__ = [
    "CNN_FLAGS",
    "DEBUG",
    "Activation",
    "Blocks",
    "Bn",
    "Dense",
    "Dropout",
    "Filters",
    "Kernel",
    "Organisation",
    "cnn_flags",
    "console",
    "given",
    "handled",
    "print_json",
    "reporter_for",
]

# The scratch CNN's flags, declared once and shared by every command that builds a model.
Blocks = Annotated[Optional[int], typer.Option(help="cnn: number of conv blocks (default 5).")]  # noqa: UP045
Filters = Annotated[Optional[int], typer.Option(help="cnn: filters in the first block (default 32).")]  # noqa: UP045
Organisation = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="cnn: filters per block: same, double or half (default same)."),
]
Kernel = Annotated[Optional[int], typer.Option(help="cnn: kernel size, odd (default 3).")]  # noqa: UP045
Activation = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="cnn: relu, gelu, silu, mish, elu or leaky_relu (default relu)."),
]
Bn = Annotated[
    Optional[bool],  # noqa: UP045
    typer.Option("--bn/--no-bn", help="cnn: BatchNorm after each activation (default on)."),
]
Dropout = Annotated[Optional[float], typer.Option(help="cnn: dropout before the output layer (default 0.2).")]  # noqa: UP045
Dense = Annotated[Optional[int], typer.Option(help="cnn: width of the dense layer (default 256).")]  # noqa: UP045
CNN_FLAGS = ("blocks", "filters", "organisation", "kernel", "activation", "bn", "dropout", "dense")


def cnn_flags(values: dict[str, Any]) -> dict[str, Any]:
    """The CNN flags the user set, picked from a command's arguments (pass `locals()`)."""
    return given(**{name: values[name] for name in CNN_FLAGS})


DEBUG = {"on": False}  # set by the root `--debug` option


def handled(function: Callable) -> Callable:
    """Wrap a command: a FastclsError prints one line and exits 1; Ctrl-C exits 130."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from fastcls.errors import FastclsError

        try:
            return function(*args, **kwargs)
        except FastclsError as exc:
            if DEBUG["on"]:
                raise
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print("interrupted: nothing was saved for the unfinished work.", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def console():
    """A rich console on stdout for results (progress goes to stderr)."""
    from rich.console import Console

    return Console(highlight=False)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def reporter_for(quiet: bool):
    """Progress on stderr unless --quiet (JSON goes to stdout, so progress never mixes with it)."""
    from fastcls.reporting import Reporter

    return Reporter("quiet" if quiet else "auto")


def given(**flags: Any) -> dict[str, Any]:
    """Only the flags the user actually set (Typer defaults are None)."""
    return {k: v for k, v in flags.items() if v is not None}
