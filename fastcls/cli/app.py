"""The `fastcls` command: Typer commands over the Python API, user errors as one line and exit 1.

Exit codes: 0 success, 1 user error, 2 usage error, 130 interrupted. `--debug` shows tracebacks.
"""

from __future__ import annotations

import typer

from fastcls.cli import ensemble, inspect, train, use
from fastcls.cli.common import DEBUG
from fastcls.cli.export import register as register_export
from fastcls.cli.interpret import register as register_interpret
from fastcls.cli.pretrain import register as register_pretrain
from fastcls.cli.sensitivity import register as register_sensitivity
from fastcls.cli.studies import register as register_studies
from fastcls.version import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="fastcls",
    help="Train, fine-tune, evaluate and explain image classifiers. Start with: fastcls train builtin:digits",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fastcls {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    """fastcls: image classifiers in one command."""
    DEBUG["on"] = debug


train.register(app)
use.register(app)
inspect.register(app)
register_interpret(app)
register_sensitivity(app)
ensemble.register(app)
register_studies(app)
register_export(app)
register_pretrain(app)


def main() -> None:
    """Entry point of the `fastcls` script and `python -m fastcls`.

    Why the explicit exit: once torch and fastai are loaded, the interpreter's own teardown
    (freeing every module object) takes about 0.8 s on a 2-core machine, after all the work is
    done and every file is fsynced. We flush the streams, run the atexit handlers, then leave.
    """
    import atexit
    import os
    import sys

    from fastcls.cli.common import is_follower

    if is_follower():  # a distributed run's rank 0 shows warnings (torch's, fastai's) once
        import warnings

        warnings.simplefilter("ignore")
    try:
        app(prog_name="fastcls")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
