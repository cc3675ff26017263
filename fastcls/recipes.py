"""Recipes: a whole study in one TOML file, run by `fastcls run tasks/NAME.toml`.

A recipe is a list of steps, each one command of fastcls with its settings; a later step may use
what an earlier one made through `${ID}` (the step's main output: a run folder, a sweep or study
folder) or `${ID.KEY}` (a named output, e.g. `${sweep.best}` or `${sens.csv}`):

    [recipe]
    name = "vote-three"
    description = "Three CNNs at two input sizes, then a hard vote."

    [settings]                      # shared by every step that takes them
    data = "builtin:digits"
    epochs = 4

    [[steps]]
    id = "small"
    command = "train"
    size = 8

    [[steps]]
    id = "vote"
    command = "ensemble"
    runs = ["${small}", "${big}", "${wide}"]
    prefer = "${small}"

    [report]                        # the one table of report.md: rows of these steps
    steps = ["vote"]

    [smoke]                         # `--smoke`: the tiny version the test suite runs
    epochs = 1

Each command is one entry of `STEPS`. A step that already ran with the same resolved settings
into the same folder is reused, so a recipe stopped half-way continues where it stopped.
Overrides: `--set KEY=VALUE` changes KEY in `[settings]` and in every step that sets it;
`--set ID.KEY=VALUE` changes one step.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.errors import ConfigError, did_you_mean
from fastcls.registry import Registry
from fastcls.runs import atomic_write_text

if TYPE_CHECKING:
    from fastcls.reporting import Reporter

__all__ = [
    "STEPS",
    "Recipe",
    "RecipeError",
    "RecipeResult",
    "Step",
    "StepKind",
    "StepOutput",
    "StepRecord",
    "format_value",
    "is_recipe",
    "load_recipe",
    "parse_override",
    "register",
    "run_recipe",
]

STATE_FILE = "steps.json"
TOP_LEVEL = ("recipe", "settings", "steps", "report", "smoke")
_REFERENCE = re.compile(r"\$\{([A-Za-z0-9_-]+)(?:\.([A-Za-z0-9_]+))?\}")
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


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
    from fastcls.api import train_run
    from fastcls.config import Config

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
    from fastcls.sweep import sweep

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
    from fastcls.scaling import scaling

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
    "rank a run's parameter tensors (fastcls sensitivity); ${ID.csv} feeds --freeze/--boost-sensitive",
)
def _sensitivity_step(ctx: StepContext) -> StepOutput:
    from fastcls.sensitivity import CSV_NAME, sensitivity

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
    from fastcls.ensemble import Ensemble

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


# -- the recipe file ----------------------------------------------------------------------------
@dataclass
class Step:
    """A step as written: `settings` may still hold `${...}` references."""

    id: str
    command: str
    label: str
    settings: dict[str, Any]


@dataclass
class Recipe:
    name: str
    description: str
    path: Path
    settings: dict[str, Any]
    steps: list[Step]
    report: dict[str, Any]
    smoke: dict[str, Any]

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)


def is_recipe(path: str | Path) -> bool:
    """True for a TOML file with a [recipe] table or [[steps]] (a run's config.toml has neither)."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return "recipe" in raw or "steps" in raw


def parse_override(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` -> (KEY, VALUE read as a TOML value when it is one, else the text)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {text!r} is not KEY=VALUE, e.g. --set epochs=1 or --set grid.fractions='[\"1/8\"]'.")
    try:
        return key, tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value.strip()


def _references(value: Any) -> list[tuple[str, str | None]]:
    if isinstance(value, str):
        return [(m.group(1), m.group(2)) for m in _REFERENCE.finditer(value)]
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, list | tuple):
        return [r for v in value for r in _references(v)]
    return []


def _apply_override(recipe: Recipe, key: str, value: Any, source: str) -> None:
    head, dot, rest = key.partition(".")
    ids = [s.id for s in recipe.steps]
    if dot and head in ids:
        step = recipe.step(head)
        _check_keys(step.id, step.command, {rest: value}, source)
        step.settings[rest] = value
        return
    takers = [s for s in recipe.steps if key in STEPS[s.command].keys]
    if not takers:
        every = sorted({k for s in recipe.steps for k in STEPS[s.command].keys})
        raise RecipeError(
            f"{source} {key!r}: no step of this recipe takes {key!r} (steps: {', '.join(ids)}); use STEP.KEY for "
            f"one step.{did_you_mean(key, every + [f'{i}.' for i in ids])}"
        )
    recipe.settings[key] = value
    for step in recipe.steps:
        if key in step.settings:
            step.settings[key] = value


def _check_keys(step_id: str, command: str, settings: Mapping[str, Any], where: str) -> None:
    kind = STEPS[command]
    unknown = sorted(set(settings) - kind.keys)
    if unknown:
        raise RecipeError(
            f"{where}: step {step_id!r} ({command}) does not take {', '.join(unknown)}."
            f"{did_you_mean(unknown[0], kind.keys)} It takes: {', '.join(sorted(kind.keys))}."
        )


def load_recipe(path: str | Path, overrides: Sequence[str] = (), smoke: bool = False) -> Recipe:
    """Read and check a recipe: commands, settings, references (only to earlier steps), overrides.

    Every mistake is found here, before the first step trains: a 15-minute recipe should not
    fail at minute 12 on a typo.
    """
    from fastcls.config import read_toml

    path = Path(path)
    raw = read_toml(path, "recipe", "; the shipped ones are in tasks/", RecipeError)
    where = str(path)
    extra = sorted(set(raw) - set(TOP_LEVEL))
    if extra:
        raise RecipeError(f"{where}: unknown table {extra[0]!r}; a recipe has {', '.join(TOP_LEVEL)}.")
    head = raw.get("recipe", {})
    name = head.get("name") or path.stem
    if not isinstance(name, str) or "/" in name:
        raise RecipeError(f"{where}: [recipe] name must be a plain name, not {name!r}.")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise RecipeError(f"{where}: no steps; add [[steps]] tables, each with a command ({', '.join(STEPS)}).")
    commands = [s.get("command") for s in steps_raw if isinstance(s, dict)]
    steps: list[Step] = []
    for n, entry in enumerate(steps_raw, 1):
        if not isinstance(entry, dict) or "command" not in entry:
            raise RecipeError(f"{where}: step {n} has no command; give one of {', '.join(STEPS)}.")
        entry = dict(entry)
        command = entry.pop("command")
        STEPS.lookup(command, prefix=f"{where}: step {n} ", error=RecipeError)
        step_id = entry.pop("id", None) or (command if commands.count(command) == 1 else None)
        if step_id is None:
            raise RecipeError(f'{where}: several steps run {command!r}; give each an id (id = "small").')
        if not _ID.match(step_id) or step_id in {s.id for s in steps}:
            raise RecipeError(f"{where}: step id {step_id!r} must be unique and a plain name (letters, digits, -, _).")
        label = str(entry.pop("label", step_id))
        _check_keys(step_id, command, entry, where)
        steps.append(Step(step_id, command, label, entry))
    settings = dict(raw.get("settings", {}))
    recipe = Recipe(name, str(head.get("description", "")), path, settings, steps, dict(raw.get("report", {})),
                    dict(raw.get("smoke", {})))  # fmt: skip
    for key in settings:
        if not any(key in STEPS[s.command].keys for s in steps):
            raise RecipeError(f"{where}: [settings] {key!r} is taken by no step ({', '.join(s.id for s in steps)}).")
    if smoke:
        if not recipe.smoke:
            raise RecipeError(f"{where} has no [smoke] table, so there is no tiny version; use --set instead.")
        for key, value in recipe.smoke.items():
            if isinstance(value, dict) and key in {s.id for s in steps}:
                for inner, v in value.items():
                    _apply_override(recipe, f"{key}.{inner}", v, f"{where} [smoke]")
            else:
                _apply_override(recipe, key, value, f"{where} [smoke]")
    for text in overrides:
        _apply_override(recipe, *parse_override(text), "--set")
    seen: list[str] = []
    for step in steps:
        for ref, _ in _references(step.settings):
            if ref not in seen:
                later = " (it runs later)" if ref in {s.id for s in steps} else ""
                raise RecipeError(
                    f"{where}: step {step.id!r} refers to ${{{ref}}}{later}; it can use earlier steps: "
                    f"{', '.join(seen) or 'none'}."
                )
        seen.append(step.id)
    for key in ("steps",):
        unknown = [s for s in recipe.report.get(key, []) if s not in seen]
        if unknown:
            raise RecipeError(f"{where}: [report] steps names {unknown[0]!r}, which is not a step ({', '.join(seen)}).")
    return recipe


# -- running ------------------------------------------------------------------------------------
@dataclass
class StepRecord:
    """A step as it ran: resolved settings, outputs, report rows, seconds, and whether it was reused."""

    id: str
    command: str
    label: str
    settings: dict[str, Any]
    outputs: dict[str, Any]
    rows: list[dict[str, Any]]
    seconds: float
    reused: bool = False


@dataclass
class RecipeResult:
    """The recipe's outcome: each step's record and the one result table of report.md."""

    name: str
    description: str
    out: Path
    steps: list[StepRecord]
    columns: list[str]
    table: list[dict[str, Any]]
    headline: str
    seconds: float
    report: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "out": str(self.out),
            "seconds": self.seconds,
            "headline": self.headline,
            "columns": self.columns,
            "table": self.table,
            "steps": [asdict(s) for s in self.steps],
            "report": str(self.report) if self.report else None,
        }


def _substitute(value: Any, records: Mapping[str, StepRecord], step_id: str) -> Any:
    if isinstance(value, Mapping):
        return {k: _substitute(v, records, step_id) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(v, records, step_id) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(ref: str, key: str | None) -> Any:
        outputs = records[ref].outputs
        name = key or "path"
        if name not in outputs:
            raise RecipeError(
                f"step {step_id!r}: ${{{ref}.{name}}} is not an output of step {ref!r}; it has {', '.join(outputs)}."
            )
        return outputs[name]

    whole = _REFERENCE.fullmatch(value)
    if whole:
        return lookup(whole.group(1), whole.group(2))
    return _REFERENCE.sub(lambda m: str(lookup(m.group(1), m.group(2))), value)


def _read_state(out: Path) -> dict[str, Any]:
    file = out / STATE_FILE
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8")).get("steps", {})
    except (OSError, json.JSONDecodeError):
        return {}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _table(recipe: Recipe, records: list[StepRecord]) -> tuple[list[str], list[dict[str, Any]], str]:
    chosen = recipe.report.get("steps") or [r.id for r in records if r.rows]
    rows = [row for r in records if r.id in chosen for row in r.rows]
    columns = list(recipe.report.get("columns") or [])
    if not columns:
        for row in rows:
            columns += [k for k in row if k not in columns]
        if len({row.get("step") for row in rows}) == 1:
            columns = [c for c in columns if c != "step"]  # one step's rows: the column says nothing
    headline = ""
    metric = recipe.report.get("metric")
    if metric:
        scored = [r for r in rows if isinstance(r.get(metric), int | float)]
        lower = metric.endswith("loss")
        scored.sort(key=lambda r: r[metric], reverse=not lower)
        rows = scored + [r for r in rows if r not in scored]
        if scored:
            best = scored[0]
            who = next((format_value(best[k]) for k in columns if k != metric and best.get(k) is not None), "")
            headline = f"Best by {metric}: {who} ({metric} {format_value(best[metric])})."
    return columns, rows, headline


def format_value(value: Any) -> str:
    """A table cell: floats to 4 decimals, lists joined, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if abs(value) >= 10:  # seconds, counts
            return f"{value:.1f}"
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ", ".join(map(format_value, value))
    return str(value)


def _markdown(recipe: Recipe, result: RecipeResult, overrides: Sequence[str], smoke: bool) -> str:
    lines = [f"# {recipe.name}", ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    title = recipe.report.get("title", "Result")
    lines += [f"## {title}", ""]
    if result.headline:
        lines += [result.headline, ""]
    if result.table:
        lines.append("| " + " | ".join(result.columns) + " |")
        lines.append("|" + "|".join("---:" if _numeric(result.table, c) else "---" for c in result.columns) + "|")
        for row in result.table:
            lines.append("| " + " | ".join(format_value(row.get(c)).replace("|", "/") for c in result.columns) + " |")
    else:
        lines.append("(no step produced rows)")
    lines += ["", "## Steps", "", "| step | command | seconds | output |", "|---|---|---:|---|"]
    for record in result.steps:
        note = " (reused)" if record.reused else ""
        lines.append(
            f"| {record.id} | {record.command} | {record.seconds:.0f}{note} | {record.outputs.get('path', '')} |"
        )
    flags = " --smoke" if smoke else ""
    flags += "".join(f" --set {o}" for o in overrides)
    lines += [
        "",
        f"Total: {result.seconds:.0f} s. Repeat with: `fastcls run {recipe.path}{flags} --out {result.out}` "
        "(steps already done are reused).",
        "",
    ]
    return "\n".join(lines)


def _numeric(rows: list[dict[str, Any]], column: str) -> bool:
    values = [r.get(column) for r in rows if r.get(column) is not None]
    return bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def run_recipe(
    recipe: Recipe | str | Path,
    out: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    smoke: bool = False,
    reporter: Reporter | str | None = "quiet",
) -> RecipeResult:
    """Run every step of a recipe into `out` (default `runs/recipes/<name>`) and write report.md.

    >>> result = run_recipe("tasks/vote-three.toml", smoke=True)  # doctest: +SKIP
    >>> result.table[-1]["member"], result.report  # doctest: +SKIP
    ('hard vote', PosixPath('runs/recipes/vote-three/report.md'))
    """
    from fastcls.reporting import as_reporter

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides, smoke)
    out = Path(out).expanduser() if out else Path("runs") / "recipes" / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    report = as_reporter(reporter)
    state = _read_state(out)
    records: dict[str, StepRecord] = {}
    ran: set[str] = set()  # steps run in this call: what refers to them runs again too
    start = time.perf_counter()
    for n, step in enumerate(recipe.steps, 1):
        kind = STEPS[step.command]
        shared = {k: v for k, v in recipe.settings.items() if k in kind.keys}
        settings = _jsonable(_substitute(shared | step.settings, records, step.id))
        previous = state.get(step.id)
        fresh_inputs = not ({ref for ref, _ in _references(shared | step.settings)} & ran)
        same = previous and previous.get("command") == step.command and previous.get("settings") == settings
        if same and fresh_inputs:
            records[step.id] = StepRecord(**(previous | {"reused": True}))
            report.info(f"step {n}/{len(recipe.steps)} {step.id} ({step.command}): done before, reused")
            continue
        folder = out / step.id
        if folder.exists() and any(folder.iterdir()):
            if previous is None:
                raise RecipeError(
                    f"step {step.id!r}: {folder} exists but was not made by this recipe; pass another --out, "
                    "or delete that folder."
                )
            import shutil

            report.info(f"step {step.id}: its settings or inputs changed; replacing {folder}")
            shutil.rmtree(folder)
        state.pop(step.id, None)
        ran.add(step.id)
        report.info(f"step {n}/{len(recipe.steps)} {step.id} ({step.command})")
        began = time.perf_counter()
        ctx = StepContext(step.id, step.label, dict(settings), folder, recipe.path.parent, report)
        made = kind.run(ctx)
        record = StepRecord(step.id, step.command, step.label, settings, _jsonable(made.outputs),
                            _jsonable(made.rows), round(time.perf_counter() - began, 1))  # fmt: skip
        records[step.id] = record
        state[step.id] = asdict(record)
        atomic_write_text(out / STATE_FILE, json.dumps({"recipe": recipe.name, "steps": state}, indent=2) + "\n")
        report.info(f"step {step.id}: done in {record.seconds:.0f}s")
    columns, table, headline = _table(recipe, list(records.values()))
    result = RecipeResult(recipe.name, recipe.description, out, list(records.values()), columns, table, headline,
                          round(time.perf_counter() - start, 1))  # fmt: skip
    result.report = out / "report.md"
    atomic_write_text(result.report, _markdown(recipe, result, overrides, smoke))
    atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return result
