"""`fastcls evaluate` and `fastcls predict`: use a trained run."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import typer

from fastcls.cli.common import console, esc, handled, json_printed, print_json

__all__ = ["register"]


def evaluate(
    run: Path = typer.Argument(..., help="A run folder."),
    data: str = typer.Argument(None, help="Data to score (default: the data the run was trained on)."),
    split: str = typer.Option(None, help="train, valid or test (default: test if present, else valid)."),
    as_json: bool = typer.Option(False, "--json", help="Print all scores, per-class and confusion, as JSON."),
) -> None:
    """Score a run on a split: accuracy, top-5, loss and per-class precision/recall/F1."""
    from rich.table import Table

    from fastcls.api import load

    result = load(run).evaluate(data, split)
    if json_printed(result, as_json):
        return
    out = console()
    out.print(
        f"[bold]{esc(run)}[/bold] on {esc(result.data)} ({esc(result.split)}, {result.n} images): "
        f"accuracy [bold]{result.accuracy:.4f}[/bold], top-5 {result.top5:.4f}, loss {result.loss:.4f}"
    )
    table = Table("class", "precision", "recall", "f1", "support")
    for name, scores in result.per_class.items():
        table.add_row(
            esc(name),
            f"{scores['precision']:.3f}",
            f"{scores['recall']:.3f}",
            f"{scores['f1']:.3f}",
            str(scores["support"]),
        )
    out.print(table)
    if result.skipped:
        out.print(f"[yellow]{result.skipped} unreadable image(s) skipped[/yellow]")


def predict(
    run: Path = typer.Argument(..., help="A run folder, or an ensemble.json from `fastcls ensemble vote`."),
    images: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write predictions to this CSV."),
    top: int = typer.Option(3, min=1, help="How many ranked classes to report per image."),
    as_json: bool = typer.Option(False, "--json", help="Print predictions as JSON."),
) -> None:
    """Predict the class of each image with a trained run or an ensemble."""
    from rich.table import Table

    from fastcls.export.predictors import load_predictor
    from fastcls.runs import atomic_write_text

    predictions = load_predictor(run).predict(images, top=top)
    if out is not None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = ["path", "label", "probability"]
        for rank in range(1, top + 1):
            header += [f"top{rank}", f"top{rank}_probability"]
        writer.writerow(header)
        for p in predictions:
            cells = [p.path, p.label, f"{p.probability:.6f}"]
            for label, prob in p.top:
                cells += [label, f"{prob:.6f}"]
            writer.writerow(cells)
        atomic_write_text(out, buffer.getvalue())
    if as_json:
        print_json([p.__dict__ for p in predictions])
        return
    table = Table("image", "label", "probability", "ranked")
    for p in predictions:
        ranked = ", ".join(f"{label} {prob:.3f}" for label, prob in p.top)
        table.add_row(esc(p.path), esc(p.label), f"{p.probability:.3f}", esc(ranked))
    console().print(table)
    if out is not None:
        console().print(f"wrote {len(predictions)} predictions to {esc(out)}")


def register(app: typer.Typer) -> None:
    app.command()(handled(evaluate))
    app.command()(handled(predict))
