"""Progress and messages for people: rich bars on a terminal, plain lines elsewhere, or nothing.

Everything goes to stderr so that `--json` output on stdout stays machine-readable. Library code
takes a `Reporter` instead of printing, so the same call is quiet in tests and lively in a shell.
Messages are plain text, never rich markup: they carry paths and class names such as
`photos [2023]`, which markup would eat (or, for `[/x]`, fail on).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["MODES", "Reporter", "Task", "as_reporter"]

MODES = ("auto", "rich", "plain", "quiet")


class Task:
    """A unit of work with a known number of steps; `advance` moves its bar."""

    def __init__(self, reporter: Reporter, description: str, total: int) -> None:
        self.reporter, self.description, self.total = reporter, description, total
        self.done = 0
        self._rich_id: Any = None

    def advance(self, steps: int = 1, **fields: Any) -> None:
        self.done += steps
        if self._rich_id is not None:
            self.reporter._progress.update(self._rich_id, advance=steps, **fields)


class Reporter:
    """Shows progress; `mode` is auto (rich on a terminal, plain otherwise), rich, plain or quiet."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        if mode not in MODES:
            raise ValueError(f"reporter mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self._progress: Any = None
        self._console: Any = None
        self._header_printed = False
        if mode == "rich":
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)

    @contextmanager
    def task(self, description: str, total: int, transient: bool = True) -> Iterator[Task]:
        """A progress bar for `total` steps (a single line when not rich)."""
        task = Task(self, description, total)
        start = time.perf_counter()
        if self.mode == "rich":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            with Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}", markup=False),
                console=self._console,
                transient=transient,
            ) as progress:
                self._progress = progress
                task._rich_id = progress.add_task(description, total=total, status="")
                try:
                    yield task
                finally:
                    self._progress = None
        else:
            yield task
            if self.mode == "plain" and not transient:
                self._line(f"{description}: {task.done}/{total} in {time.perf_counter() - start:.1f}s")

    def table_row(self, row: dict[str, Any]) -> None:
        """One row of a running table (the epoch table); the header is printed once."""
        if self.mode == "quiet":
            return
        cells = {k: _fmt(v) for k, v in row.items()}
        widths = {k: max(len(k), len(v), 8) for k, v in cells.items()}
        if not self._header_printed:
            header = "  ".join(k.rjust(widths[k]) for k in cells)
            self._line(header, style="bold")
            self._header_printed = True
        self._line("  ".join(v.rjust(widths[k]) for k, v in cells.items()))

    def info(self, message: str) -> None:
        if self.mode != "quiet":
            self._line(message)

    def warn(self, message: str) -> None:
        """Warnings show even in quiet mode: they change what the user gets."""
        if self.mode == "rich":
            from rich.text import Text

            self._console.print(Text.assemble(("warning:", "yellow"), " ", message))
        else:
            print(f"warning: {message}", file=self.stream, flush=True)

    def _line(self, text: str, style: str | None = None) -> None:
        if self.mode == "rich":
            self._console.print(text, markup=False, style=style)
        else:
            print(text, file=self.stream, flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(value)


def as_reporter(reporter: Reporter | str | None, quiet: bool = False) -> Reporter:
    """Accept a Reporter, a mode name, or None (auto), so API calls stay one-liners."""
    if isinstance(reporter, Reporter):
        return reporter
    return Reporter("quiet" if quiet else (reporter or "auto"))
