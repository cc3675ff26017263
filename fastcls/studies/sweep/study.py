"""Running a sweep: each trial is a training run under OUT/trials/, reporting its metric per epoch
to Optuna's pruner; `sweep` starts or joins the study and writes its outputs.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.errors import ConfigError, FastclsError
from fastcls.runs import atomic_write_text

if TYPE_CHECKING:
    import optuna

    from fastcls.config import Config
    from fastcls.reporting import Reporter
from fastcls.build import check_names
from fastcls.studies.sweep.results import SweepResult, fmt, sweep_outputs
from fastcls.studies.sweep.space import (
    METRICS,
    PRUNERS,
    SAMPLERS,
    SWEEP_FILE,
    Param,
    SweepError,
    TrialFailed,
    load_space,
)
from fastcls.studies.sweep.storage import (
    HEARTBEAT,
    check_heartbeat,
    check_joinable,
    default_storage,
    first_line,
    open_storage,
    retry,
    shown_storage,
    stale_handler,
    study_fingerprint,
)

__all__ = [
    "sweep",
]


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
    from fastcls.errors import Interrupted
    from fastcls.runner import train_run

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
            error = str(exc) if isinstance(exc, FastclsError) else f"{type(exc).__name__}: {first_line(exc)}"
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
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in trial.params.items())
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
        storage=open_storage(url, heartbeat, stale_handler(report, retry_failed)),
        direction=goal.direction,
        sampler=chosen,
        pruner=make_pruner(),
        load_if_exists=True,
    )
    check_joinable(opened, study_fingerprint(base, params, metric))
    check_heartbeat(opened, heartbeat)
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
    if trial is not None and trial.state.name == "FAIL" and retry(study, trial, retry_failed):
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
