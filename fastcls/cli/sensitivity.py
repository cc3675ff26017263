"""`fastcls sensitivity`: rank a run's parameter tensors by how much the validation loss depends on them."""

from __future__ import annotations

from pathlib import Path

import typer

from fastcls.cli.common import console, esc, handled, json_printed, passed, reporter_for
from fastcls.studies.sensitivity import CSV_NAME, METHODS, PER

__all__ = ["register"]

METHOD_HELP = "How to score: " + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()) + "."


def sensitivity(
    run: Path = typer.Argument(..., help="A run folder."),
    data: str = typer.Option(None, "--data", help="Data to measure on (default: the data the run was trained on)."),
    split: str = typer.Option("valid", help="The split to measure on: train, valid or test."),
    method: str = typer.Option("grad-norm", "--method", "-m", help=METHOD_HELP),
    top: int = typer.Option(20, "--top", "-n", help="Rows in the table and bar plot; ablation scores this many."),
    per: str = typer.Option("tensor", help=f"Rank what: {', '.join(PER)} (layer groups). Finetune needs tensor."),
    batches: int = typer.Option(None, help="Measure on this many batches, drawn with --seed (default: all)."),
    candidates: int = typer.Option(None, help="ablation: how many grad-norm leaders to ablate (default: --top)."),
    bs: int = typer.Option(64, "--bs", help="Batch size of the measurement."),
    seed: int = typer.Option(0, help="Seed for drawing --batches; the same seed gives the same scores."),
    out: Path = typer.Option(None, "--out", "-o", help=f"Write the CSV here (default: RUN/{CSV_NAME}); plots beside."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole ranking as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Rank parameter tensors (or modules, or layer groups) by validation-loss sensitivity.

    Writes sensitivity.csv, plots/sensitivity_top.png and plots/sensitivity_depth.png into the run
    folder (or beside --out). Feed it to `fastcls finetune --freeze-sensitive RUN/sensitivity.csv:2`.

    Example: fastcls sensitivity runs/digits-cnn --method fisher --top 10
    """
    from rich.table import Table

    from fastcls.runs import require_run
    from fastcls.studies.sensitivity import sensitivity as measure

    folder = require_run(run)
    options = passed(locals(), "data split method per batches top seed candidates bs")
    result = measure(folder, reporter=reporter_for(quiet or as_json), **options)
    result.save(out if out is not None else folder / CSV_NAME, top=top)
    if json_printed(result, as_json):
        return
    output = console()
    output.print(
        f"[bold]{esc(result.method)}[/bold] sensitivity of {esc(folder)} per {esc(result.per)} on {esc(result.data)} "
        f"({result.split}, {result.images} images, {result.batches} batches) in {result.seconds:.1f} s"
    )
    table = Table("rank")
    table.add_column(result.per, overflow="fold")  # a name cut to "blocks.1.0.conv_…" would be useless
    for column in ("shape", "numel", "score", "norm_score", "group"):
        table.add_column(column)
    for row in result.rows[:top]:
        table.add_row(
            str(row.rank),
            esc(row.name),
            esc(row.shape),
            f"{row.numel:,}",
            "-" if row.score is None else f"{row.score:.4g}",
            "-" if row.norm_score is None else f"{row.norm_score:.3f}",
            esc(row.group),
        )
    output.print(table)
    if result.scored < len(result.rows):
        output.print(
            f"ablation scored the {result.scored} leaders of grad-norm; the other {len(result.rows) - result.scored} "
            "follow in grad-norm order (raise --candidates to score more)."
        )
    output.print("wrote " + esc(", ".join(result.files.values())))


def register(app: typer.Typer) -> None:
    app.command()(handled(sensitivity))
