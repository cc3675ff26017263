"""Hyper-parameter sweeps with Optuna: any train/finetune setting can be searched.

Why Optuna: its study lives in a database (SQLite by default, in the sweep folder), so a sweep
can be stopped and resumed, and several processes or machines can work on one study at once by
giving the same `storage` URL (PostgreSQL across machines, or a journal file on NFS). Running
trials send heartbeats, so a worker that dies leaves a failed trial, not one RUNNING forever,
and `retry_failed` runs its settings again. Every trial is a normal run folder
under `<out>/trials/`, so `fastcls evaluate`, `interpret` and `runs ls` work on any of them.

The search space is a TOML table of settings, each one entry of a parameter type (`PARAM_TYPES`):

    [params]
    lr = { type = "float", low = 1e-4, high = 1e-2, log = true }
    blocks = { type = "int", low = 2, high = 4 }
    filters = { type = "choice", values = [16, 32] }

Pruning uses per-epoch reports of the metric: a trial whose epoch-k score is below the median
of earlier trials at epoch k stops there (its run folder keeps the epochs it finished, marked
`stopped: pruned`). Samplers, pruners, parameter types and metrics are registries.

    result = sweep("builtin:digits", {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
                   trials=4, out="runs/sweeps/lr", settings={"arch": "cnn", "epochs": 2})
    result.best.params, result.importance
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.config import settings_differences
from fastcls.errors import ConfigError, FastclsError
from fastcls.registry import Registry
from fastcls.runs import atomic_write_text

if TYPE_CHECKING:
    import optuna

    from fastcls.config import Config
    from fastcls.reporting import Reporter

__all__ = [
    "HEARTBEAT",
    "METRICS",
    "MIN_IMPORTANCE_TRIALS",
    "PARAM_TYPES",
    "PRUNERS",
    "SAMPLERS",
    "Metric",
    "Param",
    "ParamType",
    "SweepError",
    "SweepResult",
    "TrialRow",
    "default_storage",
    "load_space",
    "open_storage",
    "parse_space",
    "settings_differences",
    "shown_storage",
    "sweep",
    "sweep_outputs",
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


# -- results ------------------------------------------------------------------------------------
@dataclass
class TrialRow:
    """One trial as the sweep reports it: its state, score, settings and run folder."""

    number: int
    state: str  # complete, pruned, fail, running
    value: float | None
    params: dict[str, Any]
    run: str | None
    epochs: int | None = None
    seconds: float | None = None
    note: str = ""
    worker: str = ""  # host:pid of the process that ran it
    intermediate: dict[int, float] = field(default_factory=dict)


@dataclass
class SweepResult:
    """What a sweep holds after this call: every trial of the study (from any process), the best."""

    study: str
    storage: str
    out: Path
    metric: str
    direction: str
    sampler: str
    pruner: str
    params: list[Param]
    trials: list[TrialRow]
    ran: int  # trials this call ran
    best: TrialRow | None
    best_config: Path | None
    importance: dict[str, float] | None
    importance_note: str
    files: dict[str, Path] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts

    def ranked(self) -> list[TrialRow]:
        """Complete trials, best first."""
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return sorted(done, key=lambda t: t.value, reverse=self.direction == "maximize")

    def to_dict(self) -> dict[str, Any]:
        def row(t: TrialRow | None) -> dict[str, Any] | None:
            if t is None:
                return None
            return {k: v for k, v in vars(t).items() if k != "intermediate"}

        return {
            "study": self.study,
            "storage": self.storage,
            "out": str(self.out),
            "metric": self.metric,
            "direction": self.direction,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "space": {p.name: p.to_dict() for p in self.params},
            "ran": self.ran,
            "counts": self.counts(),
            "best": row(self.best),
            "best_config": str(self.best_config) if self.best_config else None,
            "importance": self.importance,
            "importance_note": self.importance_note,
            "trials": [row(t) for t in self.trials],
            "files": {k: str(v) for k, v in self.files.items()},
        }


# -- storage and study --------------------------------------------------------------------------
HEARTBEAT = 60  # seconds between a running trial's heartbeats; one silent for twice that is failed
HEARTBEAT_ATTR = "fastcls:heartbeat"  # where the journal storage keeps a trial's last heartbeat (unix time)
POSTGRES_HINT = "pip install 'fastcls[postgres]' and write it as postgresql+psycopg://user@host/db"


def default_storage(out: str | Path) -> str:
    """`sqlite:///<out>/sweep.db` with an absolute path, so every process finds the same file."""
    return f"sqlite:///{(Path(out).expanduser().resolve() / 'sweep.db')}"


def shown_storage(url: str) -> str:
    """The URL with any password replaced by ***, for messages and summary.json."""
    if url.startswith("journal:"):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


StaleCallback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def open_storage(url: str, heartbeat: int | None = None, on_stale: StaleCallback | None = None):
    """The Optuna storage for `url`: an RDBStorage (sqlite:///, postgresql+psycopg://, ...) or, for
    `journal:///shared/path/sweep.log`, a JournalStorage on that file (no database server needed).

    With `heartbeat` (seconds), each running trial records a heartbeat that often, and a trial silent
    for twice as long (its worker was killed, lost its machine) is marked failed by the next worker
    that starts a trial; `on_stale` is called with each one (to report it, or to run it again).
    """
    import warnings

    import optuna

    if isinstance(heartbeat, bool) or not (heartbeat is None or (isinstance(heartbeat, int) and heartbeat >= 1)):
        raise ConfigError(f"heartbeat must be a whole number of seconds (at least 1), not {heartbeat!r}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        if url.startswith("journal:"):
            return _journal_storage(url, heartbeat, on_stale)
        return _rdb_storage(url, heartbeat, on_stale)


def _rdb_storage(url: str, heartbeat: int | None, on_stale: StaleCallback | None):
    """An RDBStorage; SQLite waits up to a minute for a lock, and concurrent first use is retried.

    Why the retry: two processes opening a new database at once both create its tables and
    insert its schema version; the loser gets an IntegrityError (or a lock error) and simply
    opens the database the winner made.
    """
    import optuna
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    # pre-ping: a server connection idle through an hour-long trial may have been dropped meanwhile
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    beats = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat} if heartbeat else {}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_stale_trial_callback=on_stale if heartbeat else None, **beats
            )
        except ImportError:
            hint = f"; {POSTGRES_HINT}" if url.startswith("postgres") else ""
            raise SweepError(
                f"storage {shown_storage(url)} needs a database driver that is not installed{hint}."
            ) from None
        except (ArgumentError, NoSuchModuleError) as exc:
            raise SweepError(
                f"--storage {shown_storage(url)} is not a storage URL ({_first_line(exc)}); use sqlite:///PATH, "
                "postgresql+psycopg://user@host/db or journal:///shared/path/sweep.log."
            ) from None
        except SQLAlchemyError as exc:
            if attempt == 4:
                raise SweepError(f"cannot open storage {shown_storage(url)}: {_first_line(exc)}") from None
            time.sleep(0.2 + 0.5 * attempt)
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _journal_storage(url: str, heartbeat: int | None, on_stale: StaleCallback | None):
    """A JournalStorage on a file; the lock is Optuna's symlink lock, atomic on NFS (v2 and later)
    where SQLite's fcntl locks are not, and freed 30 s after a worker died holding it."""
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    path = Path(url.removeprefix("journal:").removeprefix("//")).expanduser()
    if not str(path) or path.is_dir():
        raise SweepError(f"--storage {url} needs a file, e.g. journal:///shared/sweeps/{path.name or 'sweep'}.log.")
    path = path.resolve()
    if not path.parent.is_dir():
        raise SweepError(
            f"the folder of the journal {path} does not exist; put it on storage every worker mounts at the same path."
        )
    backend = JournalFileBackend(str(path), lock_obj=JournalFileSymlinkLock(str(path)))
    return _heartbeat_journal_class()(backend, heartbeat=heartbeat, on_stale=on_stale)


@functools.cache
def _heartbeat_journal_class() -> type:
    """Optuna's JournalStorage with heartbeats, so a killed worker's trial does not stay RUNNING forever.

    Why our own: Optuna 5.0 implements heartbeats only for RDBStorage (JournalStorage is not a
    BaseHeartbeat; upstream issue optuna#6615). This plugs into Optuna's own machinery (its heartbeat
    thread during each trial, `fail_stale_trials` before each new one, the stale-trial callback): a
    heartbeat is the time in a trial system attribute, and a RUNNING trial whose last heartbeat (or
    start) is older than the grace period is stale. The clocks of the workers must agree to within
    the grace period (NTP does that on any cluster).
    """
    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat  # the base Optuna's own storages implement
    from optuna.storages.journal import JournalStorage
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        def __init__(self, backend: Any, heartbeat: int | None, on_stale: StaleCallback | None) -> None:
            super().__init__(backend)
            self.heartbeat_interval = heartbeat
            self.grace_period = 2 * heartbeat if heartbeat else None
            self.on_stale = on_stale

        def record_heartbeat(self, trial_id: int) -> None:
            # a trial another worker already took for dead: its owner learns when it next reports
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, stale = time.time(), []
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = trial.system_attrs.get(HEARTBEAT_ATTR)
                if beat is None:  # a worker without heartbeats: never judged (as RDBStorage does)
                    continue
                # a retried trial inherits its original's heartbeat, so its own start counts too
                start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
                if now - max(float(beat), start) > self.grace_period:
                    stale.append(trial._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
            return self.on_stale

    return HeartbeatJournalStorage


def _retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, retry_failed: int) -> bool:
    """Queue a failed trial's settings again unless it has been retried `retry_failed` times; True if queued.

    The retry is Optuna's RetryHeartbeatStaleTrialCallback (a WAITING trial with the same params,
    taken first by the next worker to ask, its retry history counted against `max_retry`), given
    the trial without its user attributes so the retry starts with a clean note and its own run folder.
    """
    import copy
    import warnings

    import optuna

    if not retry_failed or len(trial.system_attrs.get("retry_history", [])) >= retry_failed:
        return False
    fresh = copy.copy(trial)
    fresh.user_attrs = {}
    fresh.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != HEARTBEAT_ATTR}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry_failed)(study, fresh)
    return True


def _on_stale(report: Reporter, retry_failed: int) -> StaleCallback:
    """Optuna's stale-trial callback: say which worker died, and retry its trial if asked to."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        again = "; its settings run again next" if _retry(study, trial, retry_failed) else ""
        worker = trial.user_attrs.get("worker", "a worker")
        report.warn(f"trial {trial.number} ({worker}) stopped sending heartbeats: marked failed{again}")

    return callback


def _check_heartbeat(study: optuna.Study, heartbeat: int) -> None:
    """Every worker of a study beats at one interval: one with a shorter grace period would take the
    others' trials for dead between two of their heartbeats."""
    stored = study.user_attrs.get("fastcls_heartbeat")
    if stored is None:
        study.set_user_attr("fastcls_heartbeat", heartbeat)
    elif stored != heartbeat:
        raise SweepError(
            f"study {study.study_name!r} uses heartbeats every {stored} s; pass --heartbeat {stored} to join it "
            f"(with {heartbeat} s it would take the others' running trials for dead, or miss dead ones)."
        )


def _fingerprint(config: Config, params: list[Param], metric: str) -> dict[str, Any]:
    """What must match for processes (or a resume) to join a study: the space, metric and settings."""
    settings = config.to_dict()
    settings.pop("run", None)
    settings.get("data", {}).pop("source", None)  # machines may mount the same data at different paths
    return {"metric": metric, "space": {p.name: p.to_dict() for p in params}, "settings": settings}


def _check_joinable(study: optuna.Study, fingerprint: dict[str, Any]) -> None:
    fingerprint = json.loads(json.dumps(fingerprint))  # the form it takes in the database
    stored = study.user_attrs.get("fastcls")
    if stored is None:
        study.set_user_attr("fastcls", fingerprint)
        return
    differ = settings_differences(stored, fingerprint)
    if differ:
        raise SweepError(
            f"study {study.study_name!r} was started with other settings: {'; '.join(differ[:4])}. "
            "Trials would not be comparable; pass the same settings to continue it, or a new --study."
        )


# -- one trial ----------------------------------------------------------------------------------
def _report_callback(trial: optuna.Trial, metric: str, trainer: Any):
    """A fastai callback that reports `metric` after every epoch and stops a trial Optuna prunes.

    Stopping goes through the trainer's own stop request (reason "pruned"), so the remaining
    phases are skipped and the run is saved after its last finished epoch, like `--stop-after`.
    The final planned epoch is never pruned: its score is the trial's result.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation noise inside fastai
        from fastai.callback.core import Callback, CancelFitException

    class TrialReport(Callback):
        order = 85  # after the epoch's row, checkpoints and any stop request
        reported = 0

        def after_epoch(self) -> None:
            if len(trainer.history) == self.reported:  # an LR-finder pass, not a training epoch
                return
            self.reported = len(trainer.history)
            row = trainer.history[-1]
            value = float(row[metric])
            if not math.isfinite(value):
                return
            trial.report(value, int(row["epoch"]))
            if int(row["epoch"]) < trainer.planned_epochs and trial.should_prune():
                trainer.stop.reason = "pruned"
                raise CancelFitException()

    return TrialReport()


def _train_trial(config: Config, trial: optuna.Trial, metric: str, report: Reporter):
    """Train one trial into its run folder with `train_run`, reporting to Optuna after each epoch.
    Returns (classifier, run folder)."""
    from fastcls.api import train_run
    from fastcls.errors import Interrupted

    try:
        return train_run(config, report, callbacks=[lambda trainer: _report_callback(trial, metric, trainer)])
    except Interrupted as exc:
        raise Interrupted(
            f"{exc} The sweep stopped during trial {trial.number}; run the same command again to continue the "
            "study (the interrupted trial counts as failed)."
        ) from None


def _objective(
    base: Config, params: list[Param], metric: str, trials_dir: Path, report: Reporter, current: list[int]
) -> Callable[[optuna.Trial], float]:
    """The trial function; `current` gets each trial's number as it starts (for a retry after Ctrl-C)."""
    from fastcls.config import Config

    def objective(trial: optuna.Trial) -> float:
        import optuna

        current.append(trial.number)
        values = {p.name: p.suggest(trial) for p in params}
        folder = trials_dir / f"trial-{trial.number:04d}"
        trial.set_user_attr("run", str(folder))
        trial.set_user_attr("worker", _worker())
        start = time.perf_counter()
        try:
            config = base.merged(Config.nest(values) | {"run": {"out": str(folder), "exist_ok": False}})
            clf, _ = _train_trial(config, trial, metric, report)
        except (_interrupted(), KeyboardInterrupt):
            raise
        except Exception as exc:  # any failure fails this trial only; the table and summary.json show why
            error = str(exc) if isinstance(exc, FastclsError) else f"{type(exc).__name__}: {_first_line(exc)}"
            trial.set_user_attr("error", error)
            raise TrialFailed(error) from exc
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        trial.set_user_attr("epochs", len(clf.history))
        if clf.stopped == "pruned":
            trial.set_user_attr("note", f"pruned after epoch {len(clf.history)} of {clf.planned_epochs}")
            raise optuna.TrialPruned()
        return float(clf.metrics[metric])

    return objective


def _announce(report: Reporter, metric: str):
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        state = trial.state.name.lower()
        seconds = trial.user_attrs.get("seconds", 0.0)
        history = trial.system_attrs.get("retry_history")
        name = f"trial {trial.number}" + (f" (retry of {history[-1]})" if history else "")
        if state == "complete":
            report.info(f"{name}: {shown} -> {metric} {trial.value:.4f} ({seconds:.0f}s)")
        elif state == "pruned":
            report.info(f"{name}: {shown} -> {trial.user_attrs.get('note', 'pruned')} ({seconds:.0f}s)")
        else:
            report.warn(f"{name}: {shown} -> {state}: {trial.user_attrs.get('error', '')}")

    return callback


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# -- the public function ------------------------------------------------------------------------
def sweep(
    data: str | Path,
    space: str | Path | Mapping[str, Any] | list[Param],
    trials: int = 10,
    *,
    out: str | Path | None = None,
    study: str | None = None,
    storage: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    metric: str = "accuracy",
    settings: Mapping[str, Any] | None = None,
    base: Config | None = None,
    sampler_seed: int | None = None,
    heartbeat: int = HEARTBEAT,
    retry_failed: int = 0,
    reporter: Reporter | str | None = "quiet",
) -> SweepResult:
    """Run `trials` more trials of a study, then write its trials.csv, best.toml, importance and plots.

    `settings` (flat names, e.g. `{"arch": "cnn", "epochs": 2}`) or `base` (a Config) fix what is
    not swept; a setting may not be both fixed by a flag and swept. With several processes on one
    `storage` and `study`, each runs its own `trials`; outputs always cover the whole study.
    `sampler_seed` makes a single-process sweep repeatable (leave it None for parallel workers,
    or they propose the same settings).

    `storage` is an RDB URL (`sqlite:///...`, `postgresql+psycopg://user@host/db`) or
    `journal:///shared/path/sweep.log` (a file on NFS, no server). Running trials beat every
    `heartbeat` seconds (one value per study); a trial silent for twice that, its worker killed,
    is marked failed by the next worker to start a trial. `retry_failed` N runs such a trial's
    settings again, up to N times, and also a trial stopped by Ctrl-C or SIGTERM (preemption).

    >>> result = sweep("builtin:digits", "space.toml", trials=8, settings={"epochs": 2})  # doctest: +SKIP
    >>> result.best.params  # doctest: +SKIP
    {'lr': 0.0042, 'filters': 32}
    """
    import optuna

    from fastcls.config import Config
    from fastcls.reporting import as_reporter

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # fastcls.train.distributed.launched(), without torch
        raise SweepError(
            "a sweep does not run under torchrun: each trial trains in one process. To use several GPUs or "
            "machines, start one `fastcls sweep` worker per GPU (CUDA_VISIBLE_DEVICES) on the same --storage and "
            "--study; see README, Scaling out."
        )
    for name, value, least in (("trials", trials, 0), ("retry_failed", retry_failed, 0), ("heartbeat", heartbeat, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be a whole number of at least {least}, not {value!r}.")
    params = list(space) if isinstance(space, list) else load_space(space)
    make_sampler = SAMPLERS.lookup(sampler)
    make_pruner = PRUNERS.lookup(pruner)
    goal = METRICS.lookup(metric)
    flat = dict(settings or {})
    clash = sorted(set(flat) & {p.name for p in params})
    if clash:
        raise ConfigError(
            f"{', '.join(clash)} is both swept (in the space) and fixed (as a setting); drop the flag or the "
            "space entry."
        )
    base = (base or Config()).merged(Config.nest(flat | {"source": str(data)}))
    from fastcls.api import check_names

    for param in params:  # every end of every range and every choice must be valid: fail now, not at trial 7
        for value in param.extremes():
            try:
                check_names(base.merged(Config.nest({param.name: value})))
            except FastclsError as exc:
                raise SweepError(f"space: {param.name} = {value!r} cannot run: {exc}") from None
    study_name = study or (Path(out).name if out else f"sweep-{datetime.now():%Y%m%d-%H%M%S}")
    out = Path(out).expanduser() if out else Path("runs") / "sweeps" / study_name
    out.mkdir(parents=True, exist_ok=True)
    _claim_folder(out, study_name)
    url = storage or default_storage(out)
    report = as_reporter(reporter)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen = make_sampler(params, sampler_seed)
    opened = optuna.create_study(
        study_name=study_name,
        storage=open_storage(url, heartbeat, _on_stale(report, retry_failed)),
        direction=goal.direction,
        sampler=chosen,
        pruner=make_pruner(),
        load_if_exists=True,
    )
    _check_joinable(opened, _fingerprint(base, params, metric))
    _check_heartbeat(opened, heartbeat)
    _fail_stale(opened)  # trials of workers that died since the last look (Optuna also checks before each trial)
    before = len(opened.trials)
    todo = trials
    if sampler == "grid" and chosen.is_exhausted(opened):
        report.info(f"study {study_name}: every point of the grid has been tried; no new trials.")
        todo = 0
    if todo:
        report.info(f"study {study_name} ({shown_storage(url)}): {before} trials so far, running {todo} more")
        current: list[int] = []
        try:
            opened.optimize(
                _objective(base, params, metric, out / "trials", as_reporter("quiet"), current),
                n_trials=todo,
                catch=(TrialFailed,),
                callbacks=[_announce(report, metric)],
                gc_after_trial=True,
            )
        except (_interrupted(), KeyboardInterrupt):
            if retry_failed and current:
                _retry_stopped(opened, current[-1], retry_failed, report)
            raise
        _fail_stale(opened)
    ran = len([t for t in opened.trials if t.number >= before and t.user_attrs.get("worker") == _worker()])
    result = sweep_outputs(opened, params, metric, out, sampler=sampler, pruner=pruner, storage=shown_storage(url))
    result.ran = ran
    return result


def _worker() -> str:
    """host:pid, so each worker's trials can be told apart in a shared study."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _interrupted() -> type[Exception]:
    from fastcls.errors import Interrupted

    return Interrupted


def _fail_stale(study: optuna.Study) -> None:
    """Mark failed the running trials whose heartbeat stopped (Optuna's `fail_stale_trials`)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _retry_stopped(study: optuna.Study, number: int, retry_failed: int, report: Reporter) -> None:
    """Queue again the settings of the trial Ctrl-C or SIGTERM stopped (Optuna has marked it failed),
    through the same retry as a dead worker's trial, so `retry_failed` counts both alike."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is not None and trial.state.name == "FAIL" and _retry(study, trial, retry_failed):
        report.warn(f"trial {number} was stopped; its settings run first when the study continues")


def _claim_folder(out: Path, study: str) -> None:
    """One sweep folder holds one study: its trials/ and output files would otherwise mix."""
    marker = out / SWEEP_FILE
    if marker.is_file():
        owner = json.loads(marker.read_text(encoding="utf-8")).get("study")
        if owner != study:
            raise SweepError(
                f"{out} is the folder of study {owner!r}; pass --study {owner} to continue it, "
                f"or another --out for study {study!r}."
            )
        return
    atomic_write_text(marker, json.dumps({"format": "fastcls.sweep/1", "study": study}, indent=2) + "\n")


# -- outputs ------------------------------------------------------------------------------------
def _note(trial: optuna.trial.FrozenTrial, retried_as: dict[int, int]) -> str:
    """What trials.csv says about a trial: its error or pruning, a dead worker, and retries."""
    attrs = trial.user_attrs
    note = attrs.get("error") or attrs.get("note") or ""
    if trial.state.name == "FAIL" and not note and "seconds" not in attrs:
        note = "its worker stopped mid-trial (no heartbeat)"  # killed: it never got to record its time
    history = trial.system_attrs.get("retry_history", [])
    parts = [note] if note else []
    if history:
        parts.append(f"retry of trial {history[-1]}")
    if trial.number in retried_as:
        parts.append(f"retried as trial {retried_as[trial.number]}")
    return "; ".join(parts)


def _rows(study: optuna.Study) -> list[TrialRow]:
    rows = []
    trials = study.trials
    retried_as = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    for t in trials:
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "fail"}.get(t.state.name, t.state.name.lower())
        attrs = t.user_attrs
        rows.append(
            TrialRow(
                number=t.number,
                state=state,
                value=t.value if state == "complete" else None,
                params=dict(t.params),
                run=attrs.get("run"),
                epochs=attrs.get("epochs"),
                seconds=attrs.get("seconds"),
                note=_note(t, retried_as),
                worker=attrs.get("worker", ""),
                intermediate={int(k): float(v) for k, v in t.intermediate_values.items()},
            )
        )
    return rows


def importance(study: optuna.Study, params: Sequence[str]) -> tuple[dict[str, float] | None, str]:
    """fANOVA importance of each swept setting (shares summing to 1), or None and the reason.

    Fewer than `MIN_IMPORTANCE_TRIALS` complete trials give no importance: fANOVA would rank
    noise. A setting that took one value in every trial has importance 0.
    """
    import optuna

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"importance needs at least {MIN_IMPORTANCE_TRIALS} complete trials; this study has {len(complete)}. "
            "Run more trials (the same command continues the study)."
        )
    varied = [p for p in params if len({repr(t.params.get(p)) for t in complete}) > 1]
    if not varied:
        return None, "every complete trial used the same settings, so no setting explains the score."
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied)
    except (RuntimeError, ValueError) as exc:
        return None, f"fANOVA could not rank the settings: {exc}"
    shares = {name: float(found.get(name, 0.0)) for name in params}
    return dict(sorted(shares.items(), key=lambda kv: -kv[1])), f"fANOVA over {len(complete)} complete trials"


def _trials_csv(rows: list[TrialRow], params: list[Param], metric: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [p.name for p in params]
    writer.writerow(["number", "state", metric, *names, "epochs", "seconds", "run", "worker", "note"])
    for row in rows:
        value = "" if row.value is None else f"{row.value:.6g}"
        cells = [row.params.get(n, "") for n in names]
        extra = [row.epochs or "", row.seconds or "", row.run or "", row.worker, row.note]
        writer.writerow([row.number, row.state, value, *cells, *extra])
    return buffer.getvalue()


def _best_config(best: TrialRow, study: str, out: Path) -> Path | None:
    """best.toml: the best trial's resolved config.toml, set to train into runs/<study>-best."""
    from fastcls.config import load_config

    if not best.run or not (Path(best.run) / "config.toml").is_file():
        return None
    config = load_config(Path(best.run) / "config.toml")
    config = config.merged({"run": {"name": f"{study}-best", "root": "runs", "out": None, "exist_ok": False}})
    header = (
        f"# best trial {best.number} of study {study!r}; train it with: fastcls run {out / 'best.toml'}\n"
        f"# swept: {', '.join(f'{k} = {v!r}' for k, v in best.params.items())}\n"
    )
    path = out / "best.toml"
    atomic_write_text(path, header + config.to_toml())
    return path


def sweep_outputs(
    study: optuna.Study,
    params: list[Param],
    metric: str,
    out: str | Path,
    *,
    sampler: str = "tpe",
    pruner: str = "median",
    storage: str = "",
) -> SweepResult:
    """Write trials.csv, best.toml, importance.csv and the plots for a study; return its SweepResult."""
    out = Path(out)
    rows = _rows(study)
    goal = METRICS[metric]
    files: dict[str, Path] = {}
    atomic_write_text(out / "trials.csv", _trials_csv(rows, params, metric))
    files["trials"] = out / "trials.csv"
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    best = None
    for row in done:
        if best is None or goal.better(row.value, best.value):
            best = row
    best_config = _best_config(best, study.study_name, out) if best else None
    if best_config:
        files["best"] = best_config
    shares, note = importance(study, [p.name for p in params])
    if shares is not None:
        text = "param,importance\n" + "".join(f"{k},{v:.6f}\n" for k, v in shares.items())
        atomic_write_text(out / "importance.csv", text)
        files["importance"] = out / "importance.csv"
        files["importance_plot"] = _importance_plot(shares, out / "plots" / "importance.png")
    if rows:
        files["trials_plot"] = _trials_plot(rows, metric, goal, out / "plots" / "trials.png")
    if done:
        files["parallel_plot"] = _parallel_plot(done, params, metric, out / "plots" / "parallel.png")
    result = SweepResult(
        study=study.study_name,
        storage=storage,
        out=out,
        metric=metric,
        direction=goal.direction,
        sampler=sampler,
        pruner=pruner,
        params=params,
        trials=rows,
        ran=0,
        best=best,
        best_config=best_config,
        importance=shares,
        importance_note=note,
        files=files,
    )
    atomic_write_text(out / "summary.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    files["summary"] = out / "summary.json"
    return result


# -- plots (matplotlib, drawn from the rows) ------------------------------------------------------
def _trials_plot(rows: list[TrialRow], metric: str, goal: Metric, path: Path) -> Path:
    """The metric of each trial in order, pruned trials at their last report, and the best so far."""
    from fastcls.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    ax.plot([r.number for r in done], [r.value for r in done], "o", color="tab:blue", label="complete")
    pruned = [r for r in rows if r.state == "pruned" and r.intermediate]
    if pruned:
        last = [r.intermediate[max(r.intermediate)] for r in pruned]
        ax.plot([r.number for r in pruned], last, "x", color="tab:gray", label="pruned (last epoch reported)")
    best_x, best_y, best = [], [], None
    for r in sorted(done, key=lambda r: r.number):
        if best is None or goal.better(r.value, best):
            best = r.value
        best_x.append(r.number)
        best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title=f"{metric} per trial")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return save_figure(fig, path)


def _axis_position(param: Param, value: Any) -> float:
    """Where `value` sits on the param's parallel axis, 0 (low / first choice) to 1."""
    if param.type == "choice":
        index = next((i for i, v in enumerate(param.values) if v == value), 0)
        return index / max(len(param.values) - 1, 1)
    low, high, v = float(param.low), float(param.high), float(value)
    if param.log:
        low, high, v = math.log(low), math.log(high), math.log(v)
    return (v - low) / (high - low) if high > low else 0.5


def _parallel_plot(rows: list[TrialRow], params: list[Param], metric: str, path: Path) -> Path:
    """Parallel coordinates: one axis per swept setting plus the metric, one line per trial,
    coloured by the metric (bright is high), so good regions show as bundles of bright lines."""
    from fastcls.plots import pyplot, save_figure

    plt = pyplot()
    values = [r.value for r in rows]
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    fig, ax = plt.subplots(figsize=(1.8 * (len(params) + 1) + 2, 4.5), dpi=100)
    cmap = plt.get_cmap("viridis")
    for row in sorted(rows, key=lambda r: r.value):
        ys = [_axis_position(p, row.params.get(p.name)) for p in params] + [(row.value - lo) / span]
        ax.plot(range(len(ys)), ys, "-o", color=cmap((row.value - lo) / span), alpha=0.8, ms=3, lw=1.3)
    for i, param in enumerate(params):
        ax.axvline(i, color="black", lw=0.8)
        if param.type == "choice":
            for k, v in enumerate(param.values):
                ax.text(i + 0.03, k / max(len(param.values) - 1, 1), str(v), fontsize=8, va="center")
        else:
            ax.text(i + 0.03, 0, _fmt(param.low), fontsize=8, va="bottom")
            ax.text(i + 0.03, 1, _fmt(param.high), fontsize=8, va="top")
    ax.axvline(len(params), color="black", lw=0.8)
    ax.text(len(params) + 0.03, 0, f"{lo:.3f}", fontsize=8, va="bottom")
    ax.text(len(params) + 0.03, 1, f"{hi:.3f}", fontsize=8, va="top")
    ax.set_xticks(range(len(params) + 1), [p.name + (" (log)" if p.log else "") for p in params] + [metric])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(params) + 0.5)
    ax.set_title(f"{len(rows)} complete trials (colour: {metric})")
    return save_figure(fig, path)


def _importance_plot(shares: dict[str, float], path: Path) -> Path:
    from fastcls.plots import pyplot, save_figure

    plt = pyplot()
    names = list(shares)
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.35 * len(names)), dpi=100)
    ax.barh(range(len(names)), [shares[n] for n in names], color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlabel="fANOVA importance (share of the score's variance)", xlim=(0, 1), title="Parameter importance")
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)
