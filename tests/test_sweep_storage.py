"""Sweep storages: journal files with heartbeats, stale trials failed and retried, URL errors, heartbeat per study."""

from __future__ import annotations

import importlib.util
import io
import socket
import time
import warnings

import pytest

from fastcls.reporting import Reporter
from fastcls.studies.sweep import (
    HEARTBEAT_ATTR,
    POSTGRES_HINT,
    SweepError,
    open_storage,
    shown_storage,
    sweep,
)
from fastcls.studies.sweep.storage import stale_handler
from fastcls.studies.sweep.study import _fail_stale

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}


def _running_trial(study, worker: str):
    """Ask for a trial outside optimize (as a worker does inside it), with one param and our worker attr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with Study.optimize"
        trial = study.ask()
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    trial.set_user_attr("worker", worker)
    trial.set_user_attr("run", "runs/sweeps/s/trials/trial-0000")
    return trial


def test_journal_heartbeats_fail_a_silent_trial_and_retry_its_settings(tmp_path):
    """Two storages on one journal file stand for two workers; the first one's trial stops beating."""
    import optuna

    url = f"journal://{tmp_path / 'sweep.log'}"
    dead = open_storage(url, heartbeat=1)
    study = optuna.create_study(study_name="s", storage=dead, direction="maximize")
    trial = _running_trial(study, "gone:1")
    dead.record_heartbeat(trial._trial_id)
    assert isinstance(study.trials[0].system_attrs[HEARTBEAT_ATTR], float)

    said = io.StringIO()
    alive = open_storage(url, heartbeat=1, on_stale=stale_handler(Reporter("plain", said), retry_failed=1))
    seen = optuna.load_study(study_name="s", storage=alive)
    _fail_stale(seen)  # within the grace period (2 s): still running
    assert [t.state.name for t in seen.trials] == ["RUNNING"] and said.getvalue() == ""

    time.sleep(2.3)
    _fail_stale(seen)
    failed, retry = seen.trials
    assert failed.state.name == "FAIL" and retry.state.name == "WAITING"
    assert retry.params == failed.params and retry.user_attrs == {}  # same settings, clean note and run folder
    assert retry.system_attrs["retry_history"] == [0] and HEARTBEAT_ATTR not in retry.system_attrs
    assert "trial 0 (gone:1) stopped sending heartbeats: marked failed; its settings run again next" in said.getvalue()
    dead.record_heartbeat(trial._trial_id)  # the dead worker's late heartbeat is ignored, not an error

    # the retry itself dies too: with retry_failed=1 it is not queued a third time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = seen.ask()
    assert again.number == 1 and again.params == failed.params  # the WAITING trial is taken first
    alive.record_heartbeat(again._trial_id)
    time.sleep(2.3)
    _fail_stale(seen)
    assert [t.state.name for t in seen.trials] == ["FAIL", "FAIL"]
    assert said.getvalue().count("its settings run again next") == 1


def test_a_worker_without_heartbeats_is_never_judged(tmp_path):
    import optuna

    url = f"journal://{tmp_path / 'sweep.log'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))  # no heartbeat: no beats recorded
    _running_trial(study, "quiet:1")
    time.sleep(2.3)
    watcher = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat=1))
    _fail_stale(watcher)
    assert [t.state.name for t in watcher.trials] == ["RUNNING"]


def test_a_study_keeps_one_heartbeat_for_all_its_workers(tmp_path):
    out = tmp_path / "sweep"
    first = sweep("builtin:digits", SPACE, 0, out=out, heartbeat=30, settings={"arch": "cnn"})
    assert first.ran == 0 and first.storage.startswith("sqlite:///")
    with pytest.raises(SweepError, match=r"uses heartbeats every 30 s; pass --heartbeat 30"):
        sweep("builtin:digits", SPACE, 0, out=out, heartbeat=5, settings={"arch": "cnn"})
    with pytest.raises(Exception, match="heartbeat must be a whole number of at least 1"):
        sweep("builtin:digits", SPACE, 0, out=tmp_path / "other", heartbeat=0)
    with pytest.raises(Exception, match="retry_failed must be a whole number of at least 0"):
        sweep("builtin:digits", SPACE, 0, out=tmp_path / "other", retry_failed=-1)


def test_passwords_are_hidden_wherever_the_url_is_shown():
    assert (
        shown_storage("postgresql+psycopg://me:secret@db.lan:5432/sweeps")
        == "postgresql+psycopg://me:***@db.lan:5432/sweeps"
    )
    assert shown_storage("journal:///shared/sweep.log") == "journal:///shared/sweep.log"
    assert shown_storage("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://me@localhost/db", "is not a storage URL"),
        ("journal:///no/such/folder/sweep.log", "put it on storage every worker mounts"),
        ("journal://", "needs a file"),
    ],
)
def test_bad_storage_urls_are_one_clear_error(url, message):
    with pytest.raises(SweepError, match=message):
        open_storage(url)


def test_a_missing_database_driver_names_the_one_to_install():
    if importlib.util.find_spec("psycopg2") is not None:
        pytest.skip("psycopg2 is installed here, so there is no missing driver to report")
    with pytest.raises(SweepError, match="needs a database driver") as caught:
        open_storage("postgresql+psycopg2://me:secret@127.0.0.1/db")
    assert POSTGRES_HINT in str(caught.value) and "secret" not in str(caught.value)


def test_an_unreachable_server_is_one_clear_error_without_the_password():
    url = f"postgresql+psycopg://me:secret@127.0.0.1:{_closed_port()}/db"
    with pytest.raises(SweepError, match=r"cannot open storage postgresql\+psycopg://me:\*\*\*@127\.0\.0\.1") as caught:
        open_storage(url)
    assert "secret" not in str(caught.value)
