"""A sweep's search space (parameter types), its samplers, pruners and metrics, and its errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.errors import ConfigError, FastclsError
from fastcls.registry import Registry

if TYPE_CHECKING:
    import optuna


__all__ = [
    "METRICS",
    "MIN_IMPORTANCE_TRIALS",
    "PARAM_TYPES",
    "PRUNERS",
    "SAMPLERS",
    "SWEEP_FILE",
    "Metric",
    "Param",
    "ParamType",
    "SweepError",
    "TrialFailed",
    "load_space",
    "parse_space",
]


MIN_IMPORTANCE_TRIALS = 4  # fANOVA on fewer complete trials ranks noise (with 1 it returns equal shares)


SWEEP_FILE = "sweep.json"


class SweepError(FastclsError):
    """A sweep cannot start or continue as asked (space, study, storage)."""


class TrialFailed(SweepError):
    """One trial failed (its error is in the trial's `error` attribute); the sweep goes on."""


# -- parameter types ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One swept setting: its name (a train/finetune setting) and its range or choices."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    values: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        return PARAM_TYPES[self.type].suggest(trial, self)

    def grid(self) -> list[Any]:
        return PARAM_TYPES[self.type].grid(self)

    def extremes(self) -> list[Any]:
        """The values worth validating before any trial: the ends of a range, or every choice."""
        return list(self.values) if self.type == "choice" else [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "choice":
            out["values"] = list(self.values)
            return out
        out.update(low=self.low, high=self.high)
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class ParamType:
    """How to read one kind of space entry, suggest a value in a trial, and list a grid."""

    name: str
    keys: tuple[str, ...]
    parse: Callable[[str, dict[str, Any]], Param]
    suggest: Callable[[Any, Param], Any]
    grid: Callable[[Param], list[Any]]
    example: str


def _number(name: str, spec: dict[str, Any], key: str, integer: bool) -> float | int:
    value = spec.get(key)
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if value is None or isinstance(value, bool) or not ok:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"space entry {name!r}: {key} must be {kind}, not {value!r}.")
    return value


def _range(name: str, spec: dict[str, Any], integer: bool) -> tuple[Any, Any, bool, Any]:
    low, high = _number(name, spec, "low", integer), _number(name, spec, "high", integer)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"space entry {name!r}: log must be true or false, not {log!r}.")
    if low >= high:
        raise ConfigError(f"space entry {name!r}: low ({low}) must be below high ({high}).")
    if log and low <= 0:
        raise ConfigError(f"space entry {name!r}: a log range needs low > 0, not {low}.")
    step = spec.get("step")
    if step is not None:
        step = _number(name, spec, "step", integer)
        if step <= 0:
            raise ConfigError(f"space entry {name!r}: step must be positive, not {step}.")
        if log and not integer:
            raise ConfigError(f"space entry {name!r}: a float range takes log or step, not both.")
    return low, high, log, step


def _parse_float(name: str, spec: dict[str, Any]) -> Param:
    low, high, log, step = _range(name, spec, integer=False)
    return Param(name, "float", float(low), float(high), log, None if step is None else float(step))


def _parse_int(name: str, spec: dict[str, Any]) -> Param:
    low, high, log, step = _range(name, spec, integer=True)
    return Param(name, "int", low, high, log, step)


def _parse_choice(name: str, spec: dict[str, Any]) -> Param:
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"space entry {name!r}: values must be a non-empty list, e.g. values = [16, 32].")
    bad = [v for v in values if not isinstance(v, str | int | float | bool)]
    if bad:
        raise ConfigError(f"space entry {name!r}: choices must be numbers, strings or booleans, not {bad[0]!r}.")
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"space entry {name!r}: values {values} repeat a choice; list each once.")
    return Param(name, "choice", values=tuple(values))


def _float_grid(param: Param) -> list[float]:
    if param.step is None:
        raise ConfigError(
            f"the grid sampler needs a finite set of values, but {param.name!r} is a continuous float range; "
            "give it a step (e.g. step = 0.1) or make it a choice (values = [...])."
        )
    count = math.floor((param.high - param.low) / param.step + 1e-9) + 1
    return [round(param.low + i * param.step, 12) for i in range(count)]


def _int_grid(param: Param) -> list[int]:
    return list(range(int(param.low), int(param.high) + 1, int(param.step or 1)))


PARAM_TYPES: Registry[ParamType] = Registry(
    "type",
    {
        kind.name: kind
        for kind in (
            ParamType(
                "float",
                ("low", "high", "log", "step"),
                _parse_float,
                lambda trial, p: trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step),
                _float_grid,
                '{ type = "float", low = 1e-4, high = 1e-2, log = true }',
            ),
            ParamType(
                "int",
                ("low", "high", "log", "step"),
                _parse_int,
                lambda trial, p: trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log),
                _int_grid,
                '{ type = "int", low = 2, high = 5 }',
            ),
            ParamType(
                "choice",
                ("values",),
                _parse_choice,
                lambda trial, p: trial.suggest_categorical(p.name, list(p.values)),
                lambda p: list(p.values),
                '{ type = "choice", values = [16, 32] }',
            ),
        )
    },
)


def parse_space(raw: Mapping[str, Any]) -> list[Param]:
    """Read a `[params]` table (or the whole space file) into Params, checking every entry.

    Each name must be a train/finetune setting (`epochs`, `lr`, `blocks`, ...): a typo is an
    error before any trial runs, with the closest names suggested.
    """
    from fastcls.config import Config

    table = raw.get("params", raw) if isinstance(raw, Mapping) else raw
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"the search space is empty; give a [params] table, e.g. lr = {PARAM_TYPES['float'].example}")
    params = []
    for name, spec in table.items():
        Config.nest({name: None})  # an unknown setting name is a ConfigError naming the close ones
        if name in ("source", "out", "root", "name", "exist_ok", "command"):
            raise ConfigError(
                f"space entry {name!r} cannot be swept: it says where data or runs are, not how to train."
            )
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ConfigError(
                f"space entry {name!r} must be a table with a type, e.g. {name} = {PARAM_TYPES['choice'].example}."
            )
        kind = spec["type"]
        PARAM_TYPES.check(kind, prefix=f"space entry {name!r}: ")
        extra = sorted(set(spec) - {"type", *PARAM_TYPES[kind].keys})
        if extra:
            raise ConfigError(
                f"space entry {name!r}: {', '.join(extra)} is not a key of a {kind} entry; "
                f"it takes {', '.join(PARAM_TYPES[kind].keys)}."
            )
        params.append(PARAM_TYPES[kind].parse(name, dict(spec)))
    return params


def load_space(space: str | Path | Mapping[str, Any]) -> list[Param]:
    """A space from a TOML file (its `[params]` table) or from a dict already read."""
    if isinstance(space, Mapping):
        return parse_space(space)
    from fastcls.config import read_toml

    return parse_space(read_toml(space, "space file", "; write one with a [params] table"))


# -- samplers, pruners, metrics -----------------------------------------------------------------
def _tpe(params: list[Param], seed: int | None):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, 2 * len(params))))


def _random(params: list[Param], seed: int | None):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _grid(params: list[Param], seed: int | None):
    import optuna

    return optuna.samplers.GridSampler({p.name: p.grid() for p in params}, seed=seed)


SAMPLERS: Registry[Callable[[list[Param], int | None], Any]] = Registry(
    "sampler", {"tpe": _tpe, "random": _random, "grid": _grid}, hint="; pass --sampler tpe (or another of them)"
)


def _median():
    import optuna

    # Three finished trials make a median worth stopping on; epoch 1 already tells weak settings apart.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def _no_pruning():
    import optuna

    return optuna.pruners.NopPruner()


PRUNERS: Registry[Callable[[], Any]] = Registry(
    "pruner", {"median": _median, "none": _no_pruning}, hint="; pass --pruner median (or another of them)"
)


@dataclass(frozen=True)
class Metric:
    """A per-epoch column of metrics.csv to optimise, and which way is better."""

    name: str
    direction: str  # "maximize" or "minimize"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b


METRICS: Registry[Metric] = Registry(
    "metric",
    {m.name: m for m in (Metric("accuracy", "maximize"), Metric("top5", "maximize"), Metric("valid_loss", "minimize"))},
    hint="; pass --metric accuracy (or another of them)",
)
