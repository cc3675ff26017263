"""`fastcls train`, `finetune`, `lr-find` and `run`: flags into a Config, one API call, the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fastcls.cli.common import console, esc, handled, is_follower, print_json, reporter_for
from fastcls.cli.options import (
    AUG_FLAGS,
    CNN_FLAGS,
    Activation,
    Arch,
    AsJson,
    Aug,
    AutoAug,
    Balance,
    Blocks,
    Blur,
    Bn,
    BoostClip,
    BoostLr,
    BoostSensitive,
    BoostWd,
    Bs,
    CacheFeatures,
    ChannelsLast,
    ClipGrad,
    Compile,
    ConfigFile,
    CropScale,
    Cutmix,
    Data,
    DataOrResume,
    Dense,
    Dropout,
    EarlyStop,
    Ema,
    EmbedEvery,
    Epochs,
    Eps,
    Erasing,
    ExistOk,
    Filters,
    Fraction,
    FreezeBn,
    FreezeEpochs,
    FreezeSensitive,
    FrozenBn,
    Gamma,
    GlobalBs,
    Hflip,
    Jitter,
    Keep,
    Kernel,
    LabelSmoothing,
    Loader,
    Log,
    Lr,
    LrMult,
    LrSuggest,
    Mixup,
    Momentum,
    Monitor,
    Name,
    OnBadImage,
    Opt,
    Organisation,
    Out,
    Precision,
    Quiet,
    ResumeRun,
    Rotate,
    RunsDir,
    Sched,
    Seed,
    Size,
    StepSize,
    StopAfter,
    Strategy,
    SyncBn,
    UnfreezeEvery,
    ValidPct,
    Vflip,
    Wd,
    Weights,
    Workers,
    pick,
)

__all__ = ["register"]

COMMON = (
    "data", "arch", "epochs", "lr", "lr_suggest", "bs", "size", "seed", "wd", "valid_pct", "fraction",
    "on_bad_image", "aug", "opt", "sched", "momentum", "eps", "step_size", "gamma", "label_smoothing",
    "mixup", "cutmix", "clip_grad", "keep", "ema", "early_stop", "monitor",
    "precision", "channels_last", "compile", "log", "workers", "loader", "balance", "embed_every",
    "global_bs", "sync_bn",
    *CNN_FLAGS,
    *AUG_FLAGS,
)  # fmt: skip
RUN_FLAGS = ("name", "out", "runs_dir", "exist_ok")
FINETUNE = (
    "weights", "strategy", "freeze_epochs", "lr_mult", "unfreeze_every", "freeze_bn", "frozen_bn", "cache_features",
    "freeze_sensitive", "boost_sensitive", "boost_lr", "boost_wd", "boost_clip",
)  # fmt: skip


def _config(config_file: Path | None, flat: dict[str, Any], quiet: bool = True):
    """The settings of a new run: the config file, then the flags; then, for what neither sets, the data's
    recipe for the arch (builtin:digits has one for cnn), said in one line."""
    from fastcls.api import describe_suggestions, with_suggestions
    from fastcls.config import Config, read_toml, route_dropout

    raw = read_toml(config_file) if config_file else {}
    base = Config.from_dict(raw)  # what load_config does, keeping the file's own keys for with_suggestions
    flags = Config.nest(route_dropout(flat, flat.get("arch") or base.model.arch))
    config, applied = with_suggestions(base.merged(flags), raw, flags)
    if applied and not quiet:
        reporter_for(quiet).info(describe_suggestions(config.data.source, applied))
    return config


def _train_or_resume(
    command: str, values: dict[str, Any], names: tuple[str, ...], fixed: dict[str, Any], stop_after: int | None
) -> None:
    """`train`/`finetune`: a new run from DATA and the flags, or `--resume RUN` with the run's own settings."""
    from fastcls.errors import ConfigError
    from fastcls.train.distributed import refuse_mpi

    refuse_mpi()

    quiet, as_json, resume = values["quiet"], values["as_json"], values["resume"]
    if resume is not None:
        extra = [name for name in (*names, "config_file") if values.get(name) is not None]
        if extra:
            flags = ", ".join("DATA" if n == "data" else "--" + n.replace("_", "-") for n in extra)
            raise ConfigError(
                f"--resume continues {resume} with the settings in its config.toml; drop {flags} "
                "(only --stop-after, --quiet and --json go with --resume)."
            )
        from fastcls.api import resume_run

        _show(*resume_run(resume, reporter_for(quiet), stop_after), quiet, as_json)
        return
    if values["data"] is None:
        raise ConfigError(f"DATA is missing: `fastcls {command} DATA ...` (a folder, a CSV or builtin:digits).")
    from fastcls.api import train_run

    config = _config(values["config_file"], pick(values, names) | fixed, quiet or as_json)
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
        console().print(
            f"[yellow]stopped[/yellow] after epoch {len(clf.history)} of {clf.planned_epochs} ({clf.stopped}): {line}; "
            f"run saved to [bold]{esc(path)}[/bold]. Finish it with: {esc(clf.resume_command(path))}"
        )
        return
    console().print(f"[green]done[/green]: {line}; run saved to [bold]{esc(path)}[/bold]")


def train(
    data: DataOrResume = None,
    arch: Arch = None,
    epochs: Epochs = None,
    lr: Lr = None,
    lr_suggest: LrSuggest = None,
    bs: Bs = None,
    size: Size = None,
    seed: Seed = None,
    wd: Wd = None,
    valid_pct: ValidPct = None,
    fraction: Fraction = None,
    on_bad_image: OnBadImage = None,
    aug: Aug = None,
    crop_scale: CropScale = None,
    hflip: Hflip = None,
    vflip: Vflip = None,
    rotate: Rotate = None,
    blur: Blur = None,
    jitter: Jitter = None,
    auto_aug: AutoAug = None,
    erasing: Erasing = None,
    balance: Balance = None,
    opt: Opt = None,
    sched: Sched = None,
    momentum: Momentum = None,
    eps: Eps = None,
    step_size: StepSize = None,
    gamma: Gamma = None,
    label_smoothing: LabelSmoothing = None,
    mixup: Mixup = None,
    cutmix: Cutmix = None,
    clip_grad: ClipGrad = None,
    keep: Keep = None,
    ema: Ema = None,
    early_stop: EarlyStop = None,
    monitor: Monitor = None,
    precision: Precision = None,
    channels_last: ChannelsLast = None,
    compile: Compile = None,
    log: Log = None,
    workers: Workers = None,
    loader: Loader = None,
    embed_every: EmbedEvery = None,
    global_bs: GlobalBs = None,
    sync_bn: SyncBn = None,
    blocks: Blocks = None,
    filters: Filters = None,
    organisation: Organisation = None,
    kernel: Kernel = None,
    activation: Activation = None,
    bn: Bn = None,
    dropout: Dropout = None,
    dense: Dense = None,
    config_file: ConfigFile = None,
    name: Name = None,
    out: Out = None,
    runs_dir: RunsDir = None,
    exist_ok: ExistOk = None,
    resume: ResumeRun = None,
    stop_after: StopAfter = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Train a model from scratch (random init, every layer) on DATA and save a run folder.

    Ctrl-C (or SIGTERM) finishes the current batch, saves the run after its last finished epoch
    and exits 130; `fastcls train --resume RUN` then continues it exactly.
    """
    fixed = {"command": "train", "pretrained": False, "strategy": "full"}
    _train_or_resume("train", locals(), COMMON + RUN_FLAGS, fixed, stop_after)


def finetune(
    data: DataOrResume = None,
    arch: Arch = None,
    weights: Weights = None,
    strategy: Strategy = None,
    freeze_epochs: FreezeEpochs = None,
    epochs: Epochs = None,
    lr: Lr = None,
    lr_suggest: LrSuggest = None,
    lr_mult: LrMult = None,
    unfreeze_every: UnfreezeEvery = None,
    freeze_bn: FreezeBn = None,
    frozen_bn: FrozenBn = None,
    cache_features: CacheFeatures = None,
    freeze_sensitive: FreezeSensitive = None,
    boost_sensitive: BoostSensitive = None,
    boost_lr: BoostLr = None,
    boost_wd: BoostWd = None,
    boost_clip: BoostClip = None,
    bs: Bs = None,
    size: Size = None,
    seed: Seed = None,
    wd: Wd = None,
    valid_pct: ValidPct = None,
    fraction: Fraction = None,
    on_bad_image: OnBadImage = None,
    aug: Aug = None,
    crop_scale: CropScale = None,
    hflip: Hflip = None,
    vflip: Vflip = None,
    rotate: Rotate = None,
    blur: Blur = None,
    jitter: Jitter = None,
    auto_aug: AutoAug = None,
    erasing: Erasing = None,
    balance: Balance = None,
    opt: Opt = None,
    sched: Sched = None,
    momentum: Momentum = None,
    eps: Eps = None,
    step_size: StepSize = None,
    gamma: Gamma = None,
    label_smoothing: LabelSmoothing = None,
    mixup: Mixup = None,
    cutmix: Cutmix = None,
    clip_grad: ClipGrad = None,
    keep: Keep = None,
    ema: Ema = None,
    early_stop: EarlyStop = None,
    monitor: Monitor = None,
    precision: Precision = None,
    channels_last: ChannelsLast = None,
    compile: Compile = None,
    log: Log = None,
    workers: Workers = None,
    loader: Loader = None,
    embed_every: EmbedEvery = None,
    global_bs: GlobalBs = None,
    sync_bn: SyncBn = None,
    blocks: Blocks = None,
    filters: Filters = None,
    organisation: Organisation = None,
    kernel: Kernel = None,
    activation: Activation = None,
    bn: Bn = None,
    dropout: Dropout = None,
    dense: Dense = None,
    config_file: ConfigFile = None,
    name: Name = None,
    out: Out = None,
    runs_dir: RunsDir = None,
    exist_ok: ExistOk = None,
    resume: ResumeRun = None,
    stop_after: StopAfter = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Fine-tune a pretrained model on DATA (default: freeze-unfreeze) and save a run folder.

    Example: fastcls finetune data/plants --arch resnext101 --freeze-epochs 30
    (Ctrl-C saves a resumable run; `--resume RUN` continues it, in the phase it stopped in.)
    """
    fixed = {"command": "finetune", "pretrained": True}
    _train_or_resume("finetune", locals(), COMMON + RUN_FLAGS + FINETUNE, fixed, stop_after)


def lr_find(
    data: Data,
    arch: Arch = None,
    pretrained: bool = typer.Option(
        None, "--pretrained/--scratch", help="Load pretrained weights (default: yes, except for cnn)."
    ),
    weights: Weights = None,
    strategy: Strategy = None,
    lr_suggest: LrSuggest = None,
    bs: Bs = None,
    size: Size = None,
    seed: Seed = None,
    valid_pct: ValidPct = None,
    fraction: Fraction = None,
    blocks: Blocks = None,
    filters: Filters = None,
    organisation: Organisation = None,
    kernel: Kernel = None,
    activation: Activation = None,
    bn: Bn = None,
    dropout: Dropout = None,
    dense: Dense = None,
    plot: Path = typer.Option(Path("lr_find.png"), help="Where to draw the loss-vs-LR plot."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Run only the LR finder: print every suggestion and draw the curve (the model is not kept).

    With a fine-tuning strategy it probes the first phase (head only), as fastai's fine_tune does.
    """
    from fastcls.api import ImageClassifier
    from fastcls.plots import lr_find_plot

    names = ("data", "arch", "lr_suggest", "bs", "size", "seed", "valid_pct", "fraction", *CNN_FLAGS)
    flat = pick(locals(), (*names, "weights", "strategy"))
    if pretrained is None:
        pretrained = (arch or "cnn") != "cnn" or weights is not None
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


def run(
    config_file: Path = typer.Argument(
        ..., help="A config TOML (e.g. a run's own config.toml), or a recipe such as tasks/scaling.toml."
    ),
    name: Name = None,
    out: Out = None,
    overrides: list[str] = typer.Option(
        None, "--set", help="KEY=VALUE override, repeatable; in a recipe STEP.KEY=VALUE changes one step."
    ),
    smoke: bool = typer.Option(False, "--smoke", help="Recipes: run the tiny version in the recipe's [smoke] table."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Repeat a run from its config.toml (into a new run folder), or run a recipe's steps.

    A recipe (tasks/NAME.toml) writes every step under --out (default runs/recipes/NAME, or
    runs/recipes/--name) with report.md stating the result in one table; steps already done with
    the same settings are reused. Example: fastcls run tasks/scaling.toml --set epochs=2
    """
    from fastcls.config import Config, load_config
    from fastcls.recipes import is_recipe

    if is_recipe(config_file):
        from fastcls.cli.studies import show_recipe
        from fastcls.recipes import run_recipe

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
        from fastcls.recipes import parse_override

        config = config.merged(Config.nest(dict(parse_override(text) for text in overrides)))
    inside_run = (config_file.parent / "model.json").is_file()
    run_settings: dict[str, Any] = {"out": str(out) if out else None}
    if name or inside_run:
        run_settings["name"] = name
    if inside_run:
        run_settings["root"] = str(config_file.parent.parent)
    from fastcls.api import train_run

    _show(*train_run(config.merged({"run": run_settings}), reporter_for(quiet)), quiet, as_json)


def register(app: typer.Typer) -> None:
    app.command()(handled(train))
    app.command()(handled(finetune))
    app.command("lr-find")(handled(lr_find))
    app.command()(handled(run))
