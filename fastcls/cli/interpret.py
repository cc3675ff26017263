"""`fastcls interpret`: plots and tables that explain a trained run."""

from __future__ import annotations

from pathlib import Path

import typer

from fastcls.cli.common import console, esc, handled, json_printed, passed, reporter_for
from fastcls.interpret import PLOTS

__all__ = ["register"]


def interpret(
    run: Path = typer.Argument(..., help="A run folder."),
    data: str = typer.Option(None, "--data", help="Data to explain (default: the data the run was trained on)."),
    split: str = typer.Option(None, help="valid or test (default: test if present, else valid)."),
    only: str = typer.Option(None, help=f"Comma-separated plots to draw (default all): {', '.join(PLOTS)}."),
    layer: str = typer.Option(
        None, help="Module for cam and guided, as in model.named_modules() (default: the last conv stage)."
    ),
    units: int = typer.Option(10, help="How many units of the layer guided backprop shows."),
    images: int = typer.Option(8, help="How many images cam and top_losses show."),
    seed: int = typer.Option(0, help="Seed that picks the sample images."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the files written (per plot) as JSON."),
) -> None:
    """Explain a run: confusion matrix, classification report, top losses, curves, prediction grid,
    PCA/t-SNE of features, Grad-CAM, guided backprop, filters. PNGs go to RUN/plots/, an index to
    RUN/report.md."""
    from fastcls.interpret import interpret as run_interpret

    options = passed(locals(), "layer units images seed")
    result = run_interpret(run, data, split, only, reporter=reporter_for(quiet or as_json), **options)
    if json_printed(result, as_json):
        return
    out = console()
    for name, reason in result.skipped.items():
        out.print(f"[yellow]{esc(name)}: skipped, {esc(reason)}[/yellow]")
    out.print(
        f"wrote {len(result.paths)} files ({esc(', '.join(result.files))}) to "
        f"[bold]{esc(result.run / 'plots')}[/bold]; index in {esc(result.report)}"
    )


def register(app: typer.Typer) -> None:
    app.command()(handled(interpret))
