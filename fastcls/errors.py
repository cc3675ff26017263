"""User-facing errors: each message names the bad value, the valid choices and the fix.

The CLI prints the message of any `FastclsError` on one line and exits 1; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ArchError",
    "ConfigError",
    "DataError",
    "ExportError",
    "FastclsError",
    "Interrupted",
    "RunError",
    "TrainingDiverged",
    "did_you_mean",
]


class FastclsError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class ConfigError(FastclsError):
    """A setting has a value outside its valid range or choices."""


class DataError(FastclsError):
    """The data cannot be read or would not train (missing, empty, one class, bad images)."""


class ArchError(FastclsError):
    """The architecture name is unknown or cannot be built."""


class ExportError(FastclsError):
    """A model cannot be exported, or its export does not give the same answers (no file is kept)."""


class TrainingDiverged(FastclsError):
    """The loss became NaN or infinite; training stopped at the last good epoch."""


class Interrupted(FastclsError):
    """SIGINT or SIGTERM stopped training; the run was saved and can be resumed (exit code 130)."""

    exit_code = 130


class RunError(FastclsError):
    """A run folder is missing, incomplete, or would be overwritten."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for close matches of `name`, or '' when none is close."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(choices)), n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""
