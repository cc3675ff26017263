"""`fastcls summary`, `fastcls models`, `fastcls data check`, `fastcls runs ls`: look before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fastcls.cli.common import console, esc, handled, json_printed, print_json, reporter_for
from fastcls.cli.settings import CNN_FLAGS, pick, with_settings

__all__ = ["register"]

data_app = typer.Typer(help="Inspect data before training.", no_args_is_help=True)
runs_app = typer.Typer(help="List and inspect run folders.", no_args_is_help=True)


@with_settings(CNN_FLAGS, before="as_json")
def summary(
    arch: str = typer.Option("cnn", "--arch", "-a", help="cnn, an alias, or a timm/torchvision name."),
    size: int = typer.Option(64, help="Input size in pixels for the FLOP count."),
    classes: int = typer.Option(10, min=2, help="Number of output classes."),
    *,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    **settings: Any,
) -> None:
    """Parameters, FLOPs per image and layer groups of an architecture."""
    from rich.table import Table

    from fastcls.config import Config
    from fastcls.models.registry import build_model, resolve_arch
    from fastcls.models.summary import summarize

    cnn = pick(settings, CNN_FLAGS)
    config = Config().merged({"model": {"arch": arch, "cnn": cnn}})
    spec = resolve_arch(config.model.arch)
    result = summarize(build_model(spec, classes, size, config.model.cnn), spec.name, size, classes)
    if json_printed(result, as_json):
        return
    out = console()
    out.print(
        f"[bold]{esc(result.arch)}[/bold] at {size}px, {classes} classes: {result.params:,} parameters, "
        f"{result.flops / 1e6:,.1f} MFLOPs per image (multiply-add = 2 FLOPs)"
    )
    table = Table("group", "parameters", "tensors", "first tensor", title="layer groups")
    for group in result.groups:
        table.add_row(esc(group["name"]), f"{group['params']:,}", str(group["tensors"]), esc(group["first"]))
    out.print(table)


def models(
    pattern: str = typer.Argument("", help="A substring or glob (e.g. 'efficientnet*') to filter names."),
    as_json: bool = typer.Option(False, "--json", help="Print names as JSON."),
) -> None:
    """List architecture names: fastcls aliases, then timm and torchvision models."""
    import fnmatch

    import timm
    import torchvision

    from fastcls.models.registry import ALIASES

    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    found = {
        "aliases": {k: v for k, v in ALIASES.items() if fnmatch.fnmatch(k, glob)},
        "timm": fnmatch.filter(timm.list_models(), glob),
        "torchvision": fnmatch.filter(torchvision.models.list_models(), glob),
    }
    if as_json:
        print_json(found)
        return
    out = console()
    for alias, target in found["aliases"].items():
        out.print(f"{esc(f'{alias:20s}')} -> {esc(target)}")
    out.print(f"[bold]timm[/bold] ({len(found['timm'])}): {esc(' '.join(found['timm']))}")
    out.print(
        f"[bold]torchvision[/bold] (use as torchvision:NAME) ({len(found['torchvision'])}): "
        + esc(" ".join(found["torchvision"]))
    )


@data_app.command("check")
@handled
def data_check(
    data: str = typer.Argument(..., help="A folder, CSV or builtin:NAME."),
    valid_pct: float = typer.Option(0.2, help="Share of train held out when DATA has no valid split."),
    seed: int = typer.Option(42, help="Seed of that split."),
    size: int = typer.Option(224, min=4, help="Input size for the decoded-size estimate."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Class counts, image sizes, imbalance, decoded size, unreadable files, cross-split duplicates; exit 1
    if training would fail."""
    from rich.table import Table

    from fastcls.data.checks import check_data

    report = check_data(data, valid_pct, seed, reporter_for(quiet), size)
    if as_json:
        print_json(report.to_dict())
    else:
        out = console()
        out.print(f"[bold]{esc(report.data)}[/bold] ({esc(report.kind)}): {len(report.classes)} classes")
        if report.counts:
            splits = list(report.counts)
            table = Table("class", *(esc(s) for s in splits))
            for name in report.classes:
                table.add_row(esc(name), *(str(report.counts[s].get(name, 0)) for s in splits))
            table.add_row("[bold]total[/bold]", *(str(sum(report.counts[s].values())) for s in splits))
            out.print(table)
        for split, sizes in report.sizes.items():
            out.print(
                f"{esc(split)} image sizes (w x h): min {sizes['min'][0]}x{sizes['min'][1]}, "
                f"median {sizes['median'][0]}x{sizes['median'][1]}, max {sizes['max'][0]}x{sizes['max'][1]}"
            )
        if report.imbalance is not None:
            out.print(f"class imbalance in train (largest / smallest class): {report.imbalance:.2f}")
        if report.decoded:
            d = report.decoded
            out.print(
                f"decoded at {d['size']}px, train + valid: {d['bytes'] / 2**30:.2f} GiB, or "
                f"{d['bytes_random_crop'] / 2**30:.2f} GiB with random-crop augmentation (whole training images); "
                f"memory budget {d['budget'] / 2**30:.2f} GiB (FASTCLS_MEMORY_BUDGET): --loader auto picks "
                f"{d['loader']} ({d['loader_random_crop']} with random crops)"
            )
        for path in report.unreadable[:10]:
            out.print(f"  unreadable: {esc(path)}")
        for group in report.duplicates[:10]:
            out.print(f"  duplicate: {esc(' = '.join(group))}")
        for message in report.warnings:
            out.print(f"[yellow]warning:[/yellow] {esc(message)}")
        for message in report.errors:
            out.print(f"[red]error:[/red] {esc(message)}")
        if report.ok:
            out.print("[green]ok[/green]: this data can be trained on.")
    if not report.ok:
        raise typer.Exit(1)


@runs_app.command("ls")
@handled
def runs_ls(
    folder: Path = typer.Argument(Path("runs"), help="The folder that holds run folders."),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List runs with their best and final validation accuracy and test accuracy; then runs that were
    interrupted (with the epoch and the command to resume them) and leftovers `runs clean` removes."""
    from rich.table import Table

    from fastcls.runs import list_runs
    from fastcls.staging import find_staging

    infos = list_runs(folder)
    staging = find_staging(folder)
    if as_json:
        rows = [info.__dict__ | {"status": "stopped" if info.stopped else "finished"} for info in infos]
        print_json(rows + [item.to_dict() for item in staging])
        return
    table = Table("run", "arch", "classes", "epochs", "best valid", "final valid", "test", "created")

    def pct(value):
        return f"{value:.4f}" if value is not None else "-"

    for info in infos:
        epochs = f"{info.epochs} ({info.stopped})" if info.stopped else str(info.epochs)
        table.add_row(
            esc(info.path.name),
            esc(info.arch),
            str(info.classes),
            epochs,
            pct(info.best_accuracy),
            pct(info.final_accuracy),
            pct(info.test_accuracy),
            info.created,
        )
    out = console()
    out.print(table if infos else f"no runs in {esc(folder)}")
    if staging:
        unfinished = Table("run", "state", "resume", title="not finished")
        for item in staging:
            if item.status == "training":
                state, then = f"training now (pid {item.marker['pid']})", "-"
            elif item.status == "interrupted":
                state, then = f"interrupted after epoch {item.resume_epoch}", esc(item.resume_command)
            else:
                state, then = f"leftover: {esc(item.reason)}", "fastcls runs clean"
            unfinished.add_row(esc(item.path.name), state, then)
        out.print(unfinished)


@runs_app.command("clean")
@handled
def runs_clean(
    folder: Path = typer.Argument(Path("runs"), help="The folder that holds run folders."),
    interrupted: bool = typer.Option(
        False, "--interrupted", help="Also remove interrupted runs that could still be resumed."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before removing."),
) -> None:
    """Remove staging folders that cannot be resumed (and, with --interrupted, those that can).

    Runs training now are never touched."""
    from fastcls.staging import clean_staging, find_staging

    found = [
        item
        for item in find_staging(folder)
        if item.status == "leftover" or (interrupted and item.status == "interrupted")
    ]
    out = console()
    if not found:
        out.print(f"nothing to clean in {esc(folder)}")
        return
    for item in found:
        why = f"interrupted after epoch {item.resume_epoch}" if item.status == "interrupted" else item.reason
        out.print(f"  {esc(item.path)} ({esc(why)})")
    if not yes and not typer.confirm(f"remove these {len(found)} folder(s)?", default=False):
        out.print("nothing removed")
        return
    removed, skipped = clean_staging(found, interrupted)
    for item in skipped:
        out.print(f"[yellow]kept[/yellow] {esc(item.path)}: a process is using it")
    out.print(f"removed {len(removed)} folder(s)")


def register(app: typer.Typer) -> None:
    app.command()(handled(summary))
    app.command()(handled(models))
    app.add_typer(data_app, name="data")
    app.add_typer(runs_app, name="runs")
