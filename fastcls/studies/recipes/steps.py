"""What a recipe step can be: one registered command (train, finetune, evaluate, sweep, scaling,
sensitivity, ensemble, interpret, pretrain), the keys it takes, and the function that runs it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.config import flag
from fastcls.errors import ConfigError
from fastcls.registry import Registry

if TYPE_CHECKING:
    from fastcls.reporting import Reporter


__all__ = [
    "CONFIG_KEYS",
    "ID",
    "REFERENCE",
    "SCALING_KEYS",
    "STATE_FILE",
    "STEPS",
    "SWEEP_KEYS",
    "TOP_LEVEL",
    "RecipeError",
    "StepContext",
    "StepKind",
    "StepOutput",
    "register",
]


STATE_FILE = "steps.json"


TOP_LEVEL = ("recipe", "settings", "steps", "report", "smoke")


REFERENCE = re.compile(r"\$\{([A-Za-z0-9_-]+)(?:\.([A-Za-z0-9_]+))?\}")


ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class RecipeError(ConfigError):
    """A recipe file is malformed, or a step cannot run as written."""


# -- the step registry --------------------------------------------------------------------------
@dataclass
class StepContext:
    """What a step gets: its resolved settings, its own folder, the recipe's folder and a reporter."""

    id: str
    label: str
    settings: dict[str, Any]
    folder: Path
    recipe_dir: Path
    reporter: Reporter


@dataclass
class StepOutput:
    """What a step made: named outputs (`path` is what `${ID}` means) and rows for the report table."""

    outputs: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class StepKind:
    """One command a recipe can run: the settings it takes and the function that runs it."""

    name: str
    keys: frozenset[str]
    run: Callable[[StepContext], StepOutput]
    help: str


STEPS: Registry[StepKind] = Registry("command")


def register(name: str, keys: Iterable[str], help: str) -> Callable:
    """Add a step command: `@register("train", keys, "...")` over a function of a StepContext."""

    def decorate(function: Callable[[StepContext], StepOutput]) -> Callable[[StepContext], StepOutput]:
        STEPS.register(name, StepKind(name, frozenset(keys), function, help))
        return function

    return decorate


def _config_keys() -> set[str]:
    """Every flat train/finetune setting name (as `Config.nest` takes them), plus `data`."""
    from fastcls.config import AugConfig, CnnConfig, DataConfig, ModelConfig, RunConfig, TrainConfig

    sections = (DataConfig, ModelConfig, TrainConfig, RunConfig)
    names = {f.name for kind in sections for f in fields(kind) if f.name != "cnn"}
    names |= {f.name for f in fields(CnnConfig)} | {f.name for f in fields(AugConfig)}
    return (names - {"source", "out", "root", "name", "exist_ok", "command"}) | {"data"}


CONFIG_KEYS = frozenset(_config_keys())


def _require(ctx: StepContext, key: str, example: str) -> Any:
    if ctx.settings.get(key) in (None, "", []):
        raise RecipeError(f"step {ctx.id!r} needs {key}, e.g. {key} = {example}.")
    return ctx.settings[key]


def _flat_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Recipe settings -> flat Config settings: `data` is the source; --dropout means the head's for timm."""
    from fastcls.config import route_dropout

    flat = {k: v for k, v in settings.items() if k in CONFIG_KEYS}
    if "data" in flat:
        flat["source"] = str(flat.pop("data"))
    return route_dropout(flat, flat.get("arch", "cnn"))


def _training(ctx: StepContext, pretrained: bool) -> StepOutput:
    from fastcls.config import Config
    from fastcls.runner import train_run

    flat = _flat_config(ctx.settings) | {"command": "finetune" if pretrained else "train", "pretrained": pretrained}
    if not pretrained:
        flat.setdefault("strategy", "full")
    nested = Config.nest(flat)
    nested["run"] = {"out": str(ctx.folder), "exist_ok": False}
    config = Config().merged(nested)
    start = time.perf_counter()
    clf, path = train_run(config, ctx.reporter)
    seconds = round(time.perf_counter() - start, 1)
    metrics = clf.metrics
    row = {
        "step": ctx.label,
        "arch": clf.config.model.arch,
        "init": "pretrained" if pretrained else "scratch",
        "size": clf.config.data.size,
        "epochs": len(clf.history),
        "valid_accuracy": metrics.get("accuracy"),
        "test_accuracy": metrics.get("test_accuracy"),
        "seconds": round(seconds),
    }
    sensitive = getattr(clf, "sensitive_tensors", None) or {}
    named = [f"{how}: {', '.join(names)}" for how, names in sensitive.items() if names]
    if named:
        row["tensors"] = "; ".join(named)
    outputs = {"path": str(path), "run": str(path), "accuracy": metrics.get("accuracy")}
    outputs["test_accuracy"] = metrics.get("test_accuracy")
    return StepOutput(outputs, [row])


@register("train", CONFIG_KEYS, "train a model from scratch (fastcls train); ${ID} is the run folder")
def _train_step(ctx: StepContext) -> StepOutput:
    return _training(ctx, pretrained=False)


@register("finetune", CONFIG_KEYS, "fine-tune pretrained weights (fastcls finetune); ${ID} is the run folder")
def _finetune_step(ctx: StepContext) -> StepOutput:
    return _training(ctx, pretrained=True)


@register("evaluate", {"run", "data", "split"}, "score a run on a split (fastcls evaluate)")
def _evaluate_step(ctx: StepContext) -> StepOutput:
    from fastcls.api import load

    run = _require(ctx, "run", '"${train}"')
    result = load(run).evaluate(ctx.settings.get("data"), ctx.settings.get("split"))
    row = {"step": ctx.label, "run": str(run), "split": result.split, "images": result.n,
           "accuracy": result.accuracy, "top5": result.top5, "loss": result.loss}  # fmt: skip
    return StepOutput({"path": str(run), "accuracy": result.accuracy, "top5": result.top5}, [row])


SWEEP_KEYS = {"space", "trials", "sampler", "pruner", "metric", "study", "storage", "sampler_seed", "top"}


@register("sweep", CONFIG_KEYS | SWEEP_KEYS, "an Optuna sweep (fastcls sweep); ${ID.best} is best.toml")
def _sweep_step(ctx: StepContext) -> StepOutput:
    from fastcls.studies.sweep import sweep

    space = _require(ctx, "space", '{ lr = { type = "float", low = 1e-3, high = 1e-2, log = true } }')
    if isinstance(space, str):
        space = ctx.recipe_dir / space
    data = ctx.settings.get("data", "builtin:digits")
    settings = _flat_config(ctx.settings)
    settings.pop("source", None)
    settings.setdefault("pretrained", settings.get("arch", "cnn") != "cnn")
    settings["command"] = "finetune" if settings["pretrained"] else "train"
    result = sweep(
        data,
        space,
        int(ctx.settings.get("trials", 10)),
        out=ctx.folder,
        study=ctx.settings.get("study") or ctx.id,
        storage=ctx.settings.get("storage"),
        sampler=ctx.settings.get("sampler", "tpe"),
        pruner=ctx.settings.get("pruner", "median"),
        metric=ctx.settings.get("metric", "accuracy"),
        settings=settings,
        sampler_seed=ctx.settings.get("sampler_seed"),
        reporter=ctx.reporter,
    )
    rows = []
    importance = result.importance or {}
    for trial in result.ranked()[: int(ctx.settings.get("top", 8))]:
        rows.append({"step": ctx.label, "trial": trial.number, result.metric: trial.value,
                     **{k: _cell(v) for k, v in trial.params.items()}, "epochs": trial.epochs,
                     "seconds": round(trial.seconds or 0)})  # fmt: skip
    counts = result.counts()
    outputs = {
        "path": str(result.out),
        "best": str(result.best_config) if result.best_config else None,
        "best_run": result.best.run if result.best else None,
        result.metric: result.best.value if result.best else None,
        "best_params": result.best.params if result.best else {},
        "importance": importance,
        "importance_note": result.importance_note,
        "complete": counts.get("complete", 0),
        "pruned": counts.get("pruned", 0),
        "failed": counts.get("fail", 0),
    }
    return StepOutput(outputs, rows)


SCALING_KEYS = (CONFIG_KEYS - {"arch", "fraction", "pretrained", "weights"}) | {"archs", "fractions", "inits", "out"}


@register("scaling", SCALING_KEYS, "a scaling study (fastcls scaling); `out` may name an earlier study's folder")
def _scaling_step(ctx: StepContext) -> StepOutput:
    from fastcls.studies.scaling import scaling

    settings = _flat_config(ctx.settings)
    settings.pop("source", None)
    epochs = settings.pop("epochs", None)
    result = scaling(
        ctx.settings.get("data", "builtin:digits"),
        _require(ctx, "archs", '["cnn"]'),
        ctx.settings.get("fractions", ["1/16", "1/4", "1"]),
        ctx.settings.get("inits", ["none"]),
        epochs=epochs,
        out=ctx.settings.get("out") or ctx.folder,
        settings=settings,
        reporter=ctx.reporter,
    )
    rows = []
    for cell in result.cells:
        row = {k: v for k, v in cell.row().items() if k != "run"}
        row.update(fraction=cell.label.replace("-", "/"), seconds=round(cell.seconds))
        rows.append({"step": ctx.label, **row})
    return StepOutput({"path": str(result.out), "results": str(result.files["results"])}, rows)


@register(
    "sensitivity",
    {"run", "data", "split", "method", "per", "batches", "top", "seed", "candidates", "bs"},
    f"rank a run's parameter tensors (fastcls sensitivity); ${{ID.csv}} feeds {flag('freeze_sensitive')}/"
    f"{flag('boost_sensitive')}",
)
def _sensitivity_step(ctx: StepContext) -> StepOutput:
    from fastcls.studies.sensitivity import CSV_NAME, sensitivity

    settings = dict(ctx.settings)
    run = _require(ctx, "run", '"${base}"')
    settings.pop("run")
    result = sensitivity(run, reporter=ctx.reporter, **settings)
    top = int(settings.get("top", 20))
    files = result.save(ctx.folder / CSV_NAME, top)
    rows = [{"step": ctx.label, "rank": r.rank, "tensor": r.name, "score": r.score} for r in result.rows[:top]]
    return StepOutput({"path": str(ctx.folder), "csv": str(files["csv"]), "top": result.names(5)}, rows)


@register(
    "ensemble",
    {"runs", "data", "split", "method", "prefer", "weights", "tta"},
    "vote trained runs (fastcls ensemble vote); ${ID} is the folder with ensemble.json",
)
def _ensemble_step(ctx: StepContext) -> StepOutput:
    from fastcls.studies.ensemble import Ensemble

    runs = _require(ctx, "runs", '["${a}", "${b}", "${c}"]')
    settings = {k: v for k, v in ctx.settings.items() if k not in ("runs", "data")}
    result = Ensemble(runs).vote(ctx.settings.get("data", "builtin:digits"), out=ctx.folder, reporter=ctx.reporter,
                                 **settings)  # fmt: skip
    rows = [
        {"step": ctx.label, "member": m.name, "size": m.size, "accuracy": m.accuracy, "top5": m.top5,
         "preferred": "yes" if m.run == result.prefer else ""}
        for m in result.members
    ]  # fmt: skip
    rows.append({"step": ctx.label, "member": f"{result.method} vote", "accuracy": result.ensemble.accuracy,
                 "top5": result.ensemble.top5})  # fmt: skip
    outputs = {"path": str(ctx.folder), "accuracy": result.ensemble.accuracy, "oracle": result.oracle}
    return StepOutput(outputs, rows)


@register(
    "interpret",
    {"run", "data", "split", "only", "layer", "units", "images", "seed"},
    "explain a run with plots (fastcls interpret); files go to the run's plots/",
)
def _interpret_step(ctx: StepContext) -> StepOutput:
    from fastcls.interpret import interpret

    settings = dict(ctx.settings)
    run = _require(ctx, "run", '"${train}"')
    settings.pop("run")
    result = interpret(run, reporter=ctx.reporter, **settings)
    row = {"step": ctx.label, "run": str(run), "split": result.split, "accuracy": result.accuracy,
           "plots": ", ".join(result.files)}  # fmt: skip
    outputs = {"path": str(Path(run) / "plots"), "report": str(result.report), "accuracy": result.accuracy}
    outputs["files"] = [str(p) for p in result.paths]
    return StepOutput(outputs, [row])


def _pretrain_keys() -> frozenset[str]:
    from fastcls.pretrain.config import PretrainConfig

    return (PretrainConfig.flat_keys() - {"source", "out", "root", "name", "exist_ok", "command"}) | {"data"}


@register(
    "pretrain",
    _pretrain_keys(),
    "self-supervised pretraining of a backbone (fastcls pretrain); ${ID} is its run folder, for weights = ...",
)
def _pretrain_step(ctx: StepContext) -> StepOutput:
    from fastcls.pretrain.config import PretrainConfig
    from fastcls.pretrain.run import pretrain

    flat = dict(ctx.settings)
    if "data" in flat:
        flat["source"] = str(flat.pop("data"))
    if flat.get("weights"):
        flat.setdefault("pretrained", True)
    nested = PretrainConfig.nest(flat)
    nested["run"] = {"out": str(ctx.folder), "exist_ok": False}
    start = time.perf_counter()
    result = pretrain(PretrainConfig().merged(nested), ctx.reporter)
    row = {"step": ctx.label, "arch": result.config.model.arch, "method": result.config.pretrain.method,
           "init": "pretrained" if result.config.model.pretrained else "random", "epochs": len(result.history),
           "ssl_loss": result.ssl_loss, "seconds": round(time.perf_counter() - start)}  # fmt: skip
    outputs: dict[str, Any] = {"path": str(result.path), "run": str(result.path), "ssl_loss": result.ssl_loss}
    for key, probe in (("probe_start", result.probe_start), ("probe", result.probe)):
        if probe is not None:
            row[f"{probe['kind']}_{'start' if key == 'probe_start' else 'after'}"] = probe["accuracy"]
            outputs[key] = probe["accuracy"]
    return StepOutput(outputs, [row])


def _cell(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value
