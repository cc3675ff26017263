"""The options that are not settings, shared by the commands that take them: DATA, --config, --resume,
--stop-after, --quiet, --json. Each is an `Annotated` type holding its flag, help and type.

The settings' options are built from their config fields by `fastcls.cli.settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# ruff: noqa: UP045  (Typer needs Optional[...] inside Annotated on Python 3.10)
__all__ = ["AsJson", "ConfigFile", "Data", "DataOrResume", "Quiet", "ResumeRun", "StopAfter"]

Data = Annotated[
    str,
    typer.Argument(
        help="A folder (train/ and valid/ splits, or class folders), a CSV of path,label[,split], or builtin:digits."
    ),
]
DataOrResume = Annotated[
    Optional[str],
    typer.Argument(
        help="A folder (train/ and valid/ splits, or class folders), a CSV of path,label[,split], or builtin:digits "
        "(not needed with --resume).",
        show_default=False,
    ),
]


ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="Start from this config TOML; flags override it.")]
ResumeRun = Annotated[
    Optional[Path],
    typer.Option(
        "--resume",
        help="Continue this run (stopped by Ctrl-C or --stop-after) exactly where it stopped, with its own settings.",
    ),
]
StopAfter = Annotated[
    Optional[int],
    typer.Option(min=1, help="End cleanly after epoch N of the plan; `--resume RUN` finishes it later."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]
