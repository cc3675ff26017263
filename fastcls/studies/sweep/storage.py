"""Where a sweep's study lives (SQLite, PostgreSQL, a journal file) and how workers share it:
heartbeats, stale trials and retries, and the fingerprint that keeps other settings out.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.config import settings_differences
from fastcls.errors import ConfigError

if TYPE_CHECKING:
    import optuna

    from fastcls.config import Config
    from fastcls.reporting import Reporter
from fastcls.studies.sweep.space import Param, SweepError

__all__ = [
    "HEARTBEAT",
    "HEARTBEAT_ATTR",
    "POSTGRES_HINT",
    "StaleCallback",
    "check_heartbeat",
    "check_joinable",
    "default_storage",
    "first_line",
    "open_storage",
    "retry",
    "shown_storage",
    "stale_handler",
    "study_fingerprint",
]


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
                f"--storage {shown_storage(url)} is not a storage URL ({first_line(exc)}); use sqlite:///PATH, "
                "postgresql+psycopg://user@host/db or journal:///shared/path/sweep.log."
            ) from None
        except SQLAlchemyError as exc:
            if attempt == 4:
                raise SweepError(f"cannot open storage {shown_storage(url)}: {first_line(exc)}") from None
            time.sleep(0.2 + 0.5 * attempt)
    raise AssertionError("unreachable")


def first_line(exc: BaseException) -> str:
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


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, retry_failed: int) -> bool:
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


def stale_handler(report: Reporter, retry_failed: int) -> StaleCallback:
    """Optuna's stale-trial callback: say which worker died, and retry its trial if asked to."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        again = "; its settings run again next" if retry(study, trial, retry_failed) else ""
        worker = trial.user_attrs.get("worker", "a worker")
        report.warn(f"trial {trial.number} ({worker}) stopped sending heartbeats: marked failed{again}")

    return callback


def check_heartbeat(study: optuna.Study, heartbeat: int) -> None:
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


def study_fingerprint(config: Config, params: list[Param], metric: str) -> dict[str, Any]:
    """What must match for processes (or a resume) to join a study: the space, metric and settings."""
    settings = config.to_dict()
    settings.pop("run", None)
    settings.get("data", {}).pop("source", None)  # machines may mount the same data at different paths
    return {"metric": metric, "space": {p.name: p.to_dict() for p in params}, "settings": settings}


def check_joinable(study: optuna.Study, fingerprint: dict[str, Any]) -> None:
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
