"""`fastcls ensemble vote`: several trained runs vote on a split; one table, predictions.csv, ensemble.json."""

from __future__ import annotations

from pathlib import Path

import typer

from fastcls.cli.common import console, esc, handled, json_printed, reporter_for
from fastcls.cli.options import AsJson, Quiet
from fastcls.studies.ensemble import VOTE_METHODS

__all__ = ["ensemble_app", "register"]

ensemble_app = typer.Typer(help="Combine trained runs into one classifier.", no_args_is_help=True)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def vote(
    runs: list[Path] = typer.Argument(..., help="Two or more run folders."),
    data: str = typer.Option(..., "--data", help="DATA to vote on: a folder, a CSV or builtin:digits."),
    split: str = typer.Option("test", help="The split to score: train, valid or test."),
    method: str = typer.Option(
        "hard", help="; ".join(f"{name}: {spec.help}" for name, spec in VOTE_METHODS.items()) + "."
    ),
    prefer: str = typer.Option(None, help="The member (run folder) that wins ties (default: best on valid)."),
    weights: str = typer.Option(
        None, help="For --method weighted: one number per member (1,1,2) or auto (fitted on valid; the default)."
    ),
    tta: bool = typer.Option(False, "--tta", help="Each member averages every image and its horizontal flip."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for predictions.csv and ensemble.json."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Vote trained runs on a split: each member's and the ensemble's scores, and how often members agree.

    Example: fastcls ensemble vote runs/a runs/b runs/c --data builtin:digits --method soft
    """
    from rich.table import Table

    from fastcls.studies.ensemble import Ensemble, default_ensemble_name

    result = Ensemble(runs).vote(
        data,
        split=split,
        method=method,
        prefer=prefer,
        weights=weights,
        tta=tta,
        out=out if out is not None else Path(default_ensemble_name()),
        reporter=reporter_for(quiet or as_json),
    )
    if json_printed(result, as_json):
        return
    screen = console()
    table = Table(
        "model",
        "size",
        "weight",
        "accuracy",
        "top-5",
        "log-loss",
        title=f"{esc(result.method)} vote on {esc(result.data)} ({esc(result.split)}, {result.n} images)",
    )
    for member in result.members:
        name = member.name + (" (ties)" if member.run == result.prefer else "")
        table.add_row(
            esc(name),
            f"{member.size}px",
            f"{member.weight:.3f}",
            _number(member.accuracy),
            _number(member.top5),
            _number(member.log_loss),
        )
    table.add_section()
    score = result.ensemble
    table.add_row(
        f"[bold]ensemble ({esc(result.method)})[/bold]",
        "",
        esc(result.weights_source),
        f"[bold]{score.accuracy:.4f}[/bold]",
        _number(score.top5),
        _number(score.log_loss),
    )
    screen.print(table)
    agreement = Table("agreement", *[esc(m.name) for m in result.members])
    for member, row in zip(result.members, result.agreement, strict=True):
        agreement.add_row(esc(member.name), *[f"{value:.3f}" for value in row])
    screen.print(agreement)
    screen.print(
        f"ties go to {esc(result.prefer_name)} ({esc(result.prefer_source)}); at least one member right on "
        f"{result.oracle:.4f} of the images; {sum(m.cached for m in result.members)} of "
        f"{len(result.members)} members' predictions came from the cache"
    )
    for note in result.notes:
        screen.print(f"[yellow]note: {esc(note)}[/yellow]")
    if result.skipped:
        screen.print(f"[yellow]{result.skipped} image(s) unreadable by some member were left out[/yellow]")
    screen.print(f"wrote {esc(result.out / 'predictions.csv')} and {esc(result.out / 'ensemble.json')}")


def register(app: typer.Typer) -> None:
    ensemble_app.command("vote")(handled(vote))
    app.add_typer(ensemble_app, name="ensemble")
