"""`fastcls train`, `finetune`, `lr-find` and `run`: flags into a Config, one API call, the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fastcls.cli.common import console, esc, handled, is_follower, print_json, print_stopped, repeat_into, reporter_for
from fastcls.cli.options import (
    AsJson,
    ConfigFile,
    Data,
    DataOrResume,
    Quiet,
    ResumeRun,
    StopAfter,
)
from fastcls.cli.settings import CNN_FLAGS, flag, pick, takes_settings, with_settings

__all__ = ["register"]


def _config(config_file: Path | None, flat: dict[str, Any], quiet: bool = True):
    """The settings of a new run: the config file, then the flags; then, for what neither sets, the data's
    recipe for the arch (builtin:digits has one for cnn), said in one line."""
    from fastcls.build import describe_suggestions, with_suggestions
    from fastcls.config import Config, read_toml, route_dropout

    raw = read_toml(config_file) if config_file else {}
    base = Config.from_dict(raw)  # what load_config does, keeping the file's own keys for with_suggestions
    flags = Config.nest(route_dropout(flat, flat.get("arch") or base.model.arch))
    config, applied = with_suggestions(base.merged(flags), raw, flags)
    if applied and not quiet:
        reporter_for(quiet).info(describe_suggestions(config.data.source, applied))
    return config


def _train_or_resume(command: str, values: dict[str, Any], settings: dict[str, Any], fixed: dict[str, Any]) -> None:
    """`train`/`finetune`: a new run from DATA and the flags, or `--resume RUN` with the run's own settings."""
    from fastcls.errors import ConfigError
    from fastcls.train.distributed import refuse_mpi

    refuse_mpi()

    quiet, as_json, resume, stop_after = values["quiet"], values["as_json"], values["resume"], values["stop_after"]
    if resume is not None:
        extra = [
            n for n, v in {"data": values["data"], **settings, "config": values["config_file"]}.items() if v is not None
        ]
        if extra:
            flags = ", ".join("DATA" if n == "data" else flag(n) for n in extra)
            raise ConfigError(
                f"--resume continues {resume} with the settings in its config.toml; drop {flags} "
                "(only --stop-after, --quiet and --json go with --resume)."
            )
        from fastcls.runner import resume_run

        _show(*resume_run(resume, reporter_for(quiet), stop_after), quiet, as_json)
        return
    if values["data"] is None:
        raise ConfigError(f"DATA is missing: `fastcls {command} DATA ...` (a folder, a CSV or builtin:digits).")
    from fastcls.runner import train_run

    config = _config(
        values["config_file"], pick(settings | {"data": values["data"]}, (*settings, "data")) | fixed, quiet or as_json
    )
    _show(*train_run(config, reporter_for(quiet), stop_after), quiet, as_json)


def _show(clf, path: Path, quiet: bool, as_json: bool) -> None:
    if is_follower():  # rank 0 of the distributed run shows the result
        return
    metrics = dict(clf.metrics)
    if as_json:
        print_json(
            {
                "run": str(path),
                "arch": clf.config.model.arch,
                "epochs": len(clf.history),
                "planned_epochs": clf.planned_epochs,
                "stopped": clf.stopped,
                "resumed_after": clf.resumed_after,
                "base_lr": clf.config.train.lr,
            }
            | metrics
        )
        return
    if quiet:
        return
    line = f"valid accuracy {metrics['accuracy']:.4f}"
    if "test_accuracy" in metrics:
        line += f", test accuracy {metrics['test_accuracy']:.4f}"
    if clf.resumed_after is not None:
        line += f" (resumed after epoch {clf.resumed_after})"
    if clf.stopped:
        print_stopped(line, clf.history, clf.planned_epochs, clf.stopped, path, clf.resume_command(path))
        return
    console().print(f"[green]done[/green]: {line}; run saved to [bold]{esc(path)}[/bold]")


def _training_command(command: str, fixed: dict[str, Any], doc: str):
    """`fastcls train` or `fastcls finetune`: DATA, the command's settings (see TAKES), --config, --resume."""

    @takes_settings(command)
    def run_command(
        data: DataOrResume = None,
        *,
        config_file: ConfigFile = None,
        resume: ResumeRun = None,
        stop_after: StopAfter = None,
        quiet: Quiet = False,
        as_json: AsJson = False,
        **settings: Any,
    ) -> None:
        values = {"data": data, "config_file": config_file, "resume": resume, "stop_after": stop_after}
        _train_or_resume(command, values | {"quiet": quiet, "as_json": as_json}, settings, fixed)

    run_command.__name__ = run_command.__qualname__ = command
    run_command.__doc__ = doc
    return run_command


train = _training_command(
    "train",
    {"command": "train", "pretrained": False, "strategy": "full"},
    """Train a model from scratch (random init, every layer) on DATA and save a run folder.

    Ctrl-C (or SIGTERM) finishes the current batch, saves the run after its last finished epoch
    and exits 130; `fastcls train --resume RUN` then continues it exactly.
    """,
)
finetune = _training_command(
    "finetune",
    {"command": "finetune", "pretrained": True},
    """Fine-tune a pretrained model on DATA (default: freeze-unfreeze) and save a run folder.

    Example: fastcls finetune data/plants --arch resnext101 --freeze-epochs 30
    (Ctrl-C saves a resumable run; `--resume RUN` continues it, in the phase it stopped in.)
    """,
)


LR_FIND = ("arch", "weights", "strategy", "lr_suggest", "bs", "size", "seed", "valid_pct", "fraction", *CNN_FLAGS)


@with_settings(LR_FIND, before="plot")
def lr_find(
    data: Data,
    pretrained: bool = typer.Option(
        None, "--pretrained/--scratch", help="Load pretrained weights (default: yes, except for cnn)."
    ),
    *,
    plot: Path = typer.Option(Path("lr_find.png"), help="Where to draw the loss-vs-LR plot."),
    quiet: Quiet = False,
    as_json: AsJson = False,
    **settings: Any,
) -> None:
    """Run only the LR finder: print every suggestion and draw the curve (the model is not kept).

    With a fine-tuning strategy it probes the first phase (head only), as fastai's fine_tune does.
    """
    from fastcls.api import ImageClassifier
    from fastcls.plots import lr_find_plot

    flat = pick(settings | {"data": data}, (*LR_FIND, "data"))
    if pretrained is None:
        pretrained = (settings["arch"] or "cnn") != "cnn" or settings["weights"] is not None
    config = _config(None, flat | {"pretrained": pretrained})
    result = ImageClassifier.from_config(config).lr_find(reporter=reporter_for(quiet))
    lr_find_plot(result, plot)
    if as_json:
        print_json({"suggest": result.suggest, "lr": result.lr, "suggestions": result.suggestions, "plot": str(plot)})
        return
    out = console()
    for key, value in result.suggestions.items():
        mark = "  <- picked" if key == result.suggest else ""
        out.print(f"{key:8s} {value:.3g}{mark}")
    out.print(f"plot: {esc(plot)}")


@with_settings(("name", "out"), before="overrides")
def run(
    config_file: Path = typer.Argument(
        ..., help="A config TOML (e.g. a run's own config.toml), or a recipe such as tasks/scaling.toml."
    ),
    overrides: list[str] = typer.Option(
        None, "--set", help="KEY=VALUE override, repeatable; in a recipe STEP.KEY=VALUE changes one step."
    ),
    smoke: bool = typer.Option(False, "--smoke", help="Recipes: run the tiny version in the recipe's [smoke] table."),
    quiet: Quiet = False,
    as_json: AsJson = False,
    **settings: Any,
) -> None:
    """Repeat a run from its config.toml (into a new run folder), or run a recipe's steps.

    A recipe (tasks/NAME.toml) writes every step under --out (default runs/recipes/NAME, or
    runs/recipes/--name) with report.md stating the result in one table; steps already done with
    the same settings are reused. Example: fastcls run tasks/scaling.toml --set epochs=2
    """
    from fastcls.config import Config, load_config
    from fastcls.studies.recipes import is_recipe

    name, out = settings["name"], settings["out"]
    if is_recipe(config_file):
        from fastcls.cli.studies import show_recipe
        from fastcls.studies.recipes import run_recipe

        folder = out or (Path("runs") / "recipes" / name if name else None)
        result = run_recipe(config_file, folder, overrides=overrides or (), smoke=smoke, reporter=reporter_for(quiet))
        show_recipe(result, quiet, as_json)
        return
    from fastcls.pretrain.config import is_pretrain_config

    if is_pretrain_config(config_file):  # a pretraining run's config.toml
        from fastcls.cli.pretrain import run_config

        run_config(config_file, name, out, overrides or [], quiet, as_json)
        return
    if smoke:
        from fastcls.errors import ConfigError

        raise ConfigError(f"--smoke is for recipes (tasks/NAME.toml); {config_file} is a run config.")
    config = load_config(config_file)
    if overrides:
        from fastcls.studies.recipes import parse_override

        config = config.merged(Config.nest(dict(parse_override(text) for text in overrides)))
    from fastcls.runner import train_run

    run_folder = repeat_into(config_file, name, out)
    _show(*train_run(config.merged({"run": run_folder}), reporter_for(quiet)), quiet, as_json)


def register(app: typer.Typer) -> None:
    app.command()(handled(train))
    app.command()(handled(finetune))
    app.command("lr-find")(handled(lr_find))
    app.command()(handled(run))
