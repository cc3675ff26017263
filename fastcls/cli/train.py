"""`fastcls train` and `fastcls run`: parse flags into a Config, call `train_run`, show the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fastcls.cli.common import (
    Activation,
    Blocks,
    Bn,
    Dense,
    Dropout,
    Filters,
    Kernel,
    Organisation,
    cnn_flags,
    console,
    given,
    handled,
    print_json,
    reporter_for,
)

__all__ = ["register"]

DATA_HELP = (
    "A folder (train/ and valid/ splits, or class folders), a CSV of path,label[,split], or builtin:digits."
)


def _finish(clf, path: Path, quiet: bool, as_json: bool) -> None:
    metrics = {k: v for k, v in clf.metrics.items()}
    if as_json:
        print_json({"run": str(path), "arch": clf.config.model.arch, "epochs": len(clf.history), **metrics})
        return
    if quiet:
        return
    out = console()
    line = f"valid accuracy {metrics['accuracy']:.4f}"
    if "test_accuracy" in metrics:
        line += f", test accuracy {metrics['test_accuracy']:.4f}"
    out.print(f"[green]done[/green]: {line}; run saved to [bold]{path}[/bold]")


def train(
    data: str = typer.Argument(..., help=DATA_HELP),
    arch: str = typer.Option(
        None, "--arch", "-a", help="cnn, a fastcls alias, or any timm/torchvision model name."
    ),
    epochs: int = typer.Option(None, help="Training epochs (default 5)."),
    lr: float = typer.Option(None, help="Peak learning rate of the one-cycle schedule (default 3e-3)."),
    bs: int = typer.Option(None, help="Batch size (default 64)."),
    size: int = typer.Option(
        None,
        help="Input size in pixels (default: the model's, or the images' median side for cnn).",
    ),
    seed: int = typer.Option(None, help="Seed for the split, initialisation and shuffling (default 42)."),
    wd: float = typer.Option(None, help="AdamW weight decay (default 0.01)."),
    valid_pct: float = typer.Option(
        None,
        help="Share of train held out for validation when DATA has no valid split (default 0.2).",
    ),
    fraction: str = typer.Option(None, help="Train on a stratified share of train, e.g. 1/16 or 0.25."),
    on_bad_image: str = typer.Option(None, help="skip (default: skip and count) or error."),
    blocks: Blocks = None,
    filters: Filters = None,
    organisation: Organisation = None,
    kernel: Kernel = None,
    activation: Activation = None,
    bn: Bn = None,
    dropout: Dropout = None,
    dense: Dense = None,
    config_file: Path = typer.Option(
        None, "--config", help="Start from this config TOML; flags override it."
    ),
    name: str = typer.Option(None, help="Run name under --runs-dir (default <arch>-<date>-<time>)."),
    out: Path = typer.Option(None, help="The run folder itself (overrides --runs-dir/--name)."),
    runs_dir: Path = typer.Option(None, help="Parent folder of runs (default runs)."),
    exist_ok: bool = typer.Option(None, "--exist-ok", help="Write into an existing non-empty run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as one JSON object."),
) -> None:
    """Train a model from scratch on DATA and save a run folder."""
    from fastcls.api import train_run
    from fastcls.config import Config, load_config

    flat: dict[str, Any] = cnn_flags(locals()) | given(
        source=data,
        arch=arch,
        epochs=epochs,
        lr=lr,
        bs=bs,
        size=size,
        seed=seed,
        wd=wd,
        valid_pct=valid_pct,
        fraction=fraction,
        on_bad_image=on_bad_image,
        name=name,
        out=str(out) if out else None,
        root=str(runs_dir) if runs_dir else None,
        exist_ok=exist_ok,
    )
    base = load_config(config_file) if config_file else Config()
    config = base.merged(Config.nest(flat))
    clf, path = train_run(config, reporter_for(quiet))
    _finish(clf, path, quiet, as_json)


def run(
    config_file: Path = typer.Argument(..., help="A config TOML, e.g. a run's own config.toml."),
    name: str = typer.Option(None, help="Name of the new run (default <arch>-<date>-<time>)."),
    out: Path = typer.Option(None, help="The new run folder itself."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as one JSON object."),
) -> None:
    """Repeat a run from its config.toml (into a new run folder)."""
    from fastcls.api import train_run
    from fastcls.config import load_config

    config = load_config(config_file)
    inside_run = (config_file.parent / "model.json").is_file()
    run_settings: dict[str, Any] = {"out": str(out) if out else None}
    if name or inside_run:
        run_settings["name"] = name
    if inside_run:
        run_settings["root"] = str(config_file.parent.parent)
    config = config.merged({"run": run_settings})
    clf, path = train_run(config, reporter_for(quiet))
    _finish(clf, path, quiet, as_json)


def register(app: typer.Typer) -> None:
    app.command()(handled(train))
    app.command()(handled(run))
