"""`fastcls sweep` and `fastcls scaling`: studies over many runs, and how a recipe's result is shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fastcls.cli.common import console, esc, handled, json_printed, passed, reporter_for
from fastcls.cli.options import AsJson, ConfigFile, Data, Quiet
from fastcls.cli.settings import pick, takes_settings

__all__ = ["register", "show_recipe"]


def _base(config_file: Path | None, flat: dict[str, Any]):
    """The --config file as the base Config (or None), with --dropout meaning the head's for timm archs."""
    from fastcls.config import load_config, route_dropout

    base = load_config(config_file) if config_file else None
    route_dropout(flat, flat.get("arch") or (base.model.arch if base else "cnn"))
    return base


@takes_settings("sweep")
def sweep(
    data: Data,
    space: Path = typer.Option(..., "--space", help="TOML with a [params] table: float, int or choice entries."),
    trials: int = typer.Option(10, "--trials", "-n", min=0, help="Trials this process runs (more join the study)."),
    storage: str = typer.Option(
        None,
        help="Optuna storage shared by every worker: sqlite:///OUT/sweep.db (default), "
        "postgresql+psycopg://user@host/db (pip install 'fastcls[postgres]') or journal:///shared/path/sweep.log "
        "(a file on NFS, no server).",
    ),
    heartbeat: int = typer.Option(
        60, min=1, help="Seconds between a running trial's heartbeats; one silent twice that long (worker died) fails."
    ),
    retry_failed: int = typer.Option(
        0, min=0, help="Run the settings of a trial whose worker died or was stopped (Ctrl-C, SIGTERM) again, N times."
    ),
    sampler: str = typer.Option("tpe", help="tpe (default), random or grid (every combination, ints/choices)."),
    pruner: str = typer.Option("median", help="median (stop trials below the median at an epoch) or none."),
    study: str = typer.Option(None, help="Study name; the same name (and storage) continues it (default: OUT's name)."),
    metric: str = typer.Option("accuracy", help="What to optimise: accuracy, top5 or valid_loss."),
    out: Path = typer.Option(None, "--out", "-o", help="The sweep folder (default runs/sweeps/STUDY)."),
    sampler_seed: int = typer.Option(None, help="Seed the sampler, for a repeatable single-process sweep."),
    pretrained: bool = typer.Option(
        None, "--pretrained/--scratch", help="Fine-tune pretrained weights (default: yes, except for cnn)."
    ),
    *,
    config_file: ConfigFile = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
    **settings: Any,
) -> None:
    """Search train/finetune settings with Optuna; every trial is a run folder under OUT/trials/.

    Settings not in the space are fixed by the usual flags. Writes trials.csv, best.toml (train
    it with `fastcls run OUT/best.toml`), importance.csv and plots/ (parallel.png, trials.png).
    Start the same command in more terminals (or machines, with --storage postgresql+psycopg://...
    or journal:///shared/...) to run trials in parallel; run it again to add trials.

    Example: fastcls sweep builtin:digits --space space.toml --trials 20 --arch cnn --epochs 3
    """
    from fastcls.studies.sweep import sweep as run_sweep

    flat = pick(settings, tuple(settings))
    base = _base(config_file, flat)
    if pretrained is None:
        arch_name = flat.get("arch") or (base.model.arch if base else "cnn")
        pretrained = arch_name != "cnn" or settings["weights"] is not None
    flat |= {"pretrained": pretrained, "command": "finetune" if pretrained else "train"}
    options = passed(locals(), "out study storage sampler pruner metric sampler_seed heartbeat retry_failed")
    result = run_sweep(
        data, space, trials, settings=flat, base=base, reporter=reporter_for(quiet or as_json), **options
    )
    if json_printed(result, as_json):
        return
    _show_sweep(result)


def _show_sweep(result) -> None:
    from rich.table import Table

    out = console()
    counts = result.counts()
    summary = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trials"
    out.print(
        f"study [bold]{esc(result.study)}[/bold]: {len(result.trials)} trials ({summary}); this call ran {result.ran}"
    )
    names = [p.name for p in result.params]
    table = Table(
        "trial", result.metric, *map(esc, names), "epochs", "seconds", title=f"best trials by {result.metric}"
    )
    for trial in result.ranked()[:10]:
        cells = [esc(_fmt(trial.params.get(n))) for n in names]
        table.add_row(
            str(trial.number), f"{trial.value:.4f}", *cells, str(trial.epochs or ""), f"{trial.seconds or 0:.0f}"
        )
    if result.ranked():
        out.print(table)
    for trial in [t for t in result.trials if t.state == "fail"][:10]:
        out.print(f"[yellow]trial {trial.number} failed[/yellow]: {esc(trial.note or 'no error recorded')}")
    if result.importance:
        shares = ", ".join(f"{k} {v:.2f}" for k, v in result.importance.items())
        out.print(f"importance ({esc(result.importance_note)}): {esc(shares)}")
    else:
        out.print(f"[yellow]importance: {esc(result.importance_note)}[/yellow]")
    if result.best_config:
        out.print(f"best: trial {result.best.number}; train it with: fastcls run {esc(result.best_config)}")
    else:
        out.print("[yellow]no trial completed yet, so there is no best.toml[/yellow]")
    out.print(f"files in [bold]{esc(result.out)}[/bold]: " + esc(", ".join(p.name for p in result.files.values())))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@takes_settings("scaling")
def scaling(
    data: Data,
    arch: str = typer.Option(..., "--arch", "-a", help="Comma-separated archs, e.g. cnn,efficientnet_lite0."),
    fractions: str = typer.Option("1/16,1/4,1", help="Comma-separated shares of train, e.g. 1/16,1/2,1."),
    weights: str = typer.Option("none", "--weights", help="Comma-separated inits: none (scratch), pretrained."),
    out: Path = typer.Option(None, "--out", "-o", help="The study folder (default runs/scaling/scaling-DATE-TIME)."),
    *,
    config_file: ConfigFile = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
    **settings: Any,
) -> None:
    """Accuracy vs data size: train arch × fraction × init with the same epochs per cell.

    Prints train and valid accuracy per cell, writes results.csv and plots/scaling.png (log x, one
    line per arch × init) into OUT, each cell's run under OUT/cells/. Cells already in OUT are
    reused, so an interrupted study continues; `--weights pretrained` fine-tunes (freeze-unfreeze
    spends --freeze-epochs of the budget on the head).

    Example: fastcls scaling builtin:digits --arch cnn --fractions 1/16,1/4,1 --epochs 5 --size 16
    """
    from fastcls.config import route_dropout
    from fastcls.studies.scaling import scaling as run_scaling

    flat = route_dropout(pick(settings, tuple(settings)), arch)
    base = _base(config_file, {})
    reporter = reporter_for(quiet or as_json)
    result = run_scaling(data, arch, fractions, weights, out=out, settings=flat, base=base, reporter=reporter)
    if json_printed(result, as_json):
        return
    _show_scaling(result)


def _show_scaling(result) -> None:
    from rich.table import Table

    has_test = any(c.test_accuracy is not None for c in result.cells)
    columns = ["arch", "init", "fraction", "train images", "train acc", "valid acc"] + (
        ["test acc"] if has_test else []
    )
    table = Table(
        *columns,
        "seconds",
        title=f"{esc(result.data)}: {result.epochs} epoch{'s' if result.epochs != 1 else ''} per cell",
    )
    for c in result.cells:
        cells = [c.arch, c.init, c.label.replace("-", "/"), str(c.train_images), f"{c.train_accuracy:.4f}",
                 f"{c.valid_accuracy:.4f}"]  # fmt: skip
        if has_test:
            cells.append("" if c.test_accuracy is None else f"{c.test_accuracy:.4f}")
        table.add_row(*map(esc, cells), "reused" if c.reused else f"{c.seconds:.0f}")
    out = console()
    out.print(table)
    out.print(f"results: {esc(result.files['results'])}; plot: {esc(result.files['plot'])}")


def show_recipe(result, quiet: bool, as_json: bool) -> None:
    """Print a recipe's result table (what its report.md states), or the whole result as JSON."""
    if json_printed(result, as_json, quiet):
        return
    from rich.table import Table

    from fastcls.studies.recipes import format_value

    table = Table(*map(esc, result.columns), title=f"{esc(result.name)}: result")
    for row in result.table:
        table.add_row(*(esc(format_value(row.get(c))) for c in result.columns))
    out = console()
    out.print(table)
    if result.headline:
        out.print(esc(result.headline))
    reused = sum(s.reused for s in result.steps)
    note = f" ({reused} reused)" if reused else ""
    out.print(
        f"[green]done[/green]: {len(result.steps)} steps{note} in {result.seconds:.0f}s; report: {esc(result.report)}"
    )


def register(app: typer.Typer) -> None:
    app.command()(handled(sweep))
    app.command()(handled(scaling))
