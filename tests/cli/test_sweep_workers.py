"""`fastcls sweep` workers across machines: a real PostgreSQL with a worker killed mid-trial, a journal
file shared by two workers, and a trial stopped by SIGTERM queued to run again."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastcls.studies.sweep import HEARTBEAT_ATTR, open_storage
from postgres_support import postgres_server

TINY = ("--blocks", "2", "--filters", "8", "--bs", "16", "--pruner", "none", "--quiet")


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[params]\nlr = { type = "float", low = 2e-3, high = 2e-2, log = true }\n')
    return path


@pytest.fixture
def postgres_url():
    with postgres_server() as url:
        yield url


def _command(data: Path, space: Path, storage: str | None, study: str, out: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "fastcls", "sweep", str(data), "--space", str(space), "--study", study]
    command += ["--out", str(out), *TINY, *extra]
    return command + (["--storage", storage] if storage else [])


def _start(command: list[str]) -> subprocess.Popen:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _worker(process: subprocess.Popen) -> str:
    return f"{socket.gethostname()}:{process.pid}"  # how fastcls.studies.sweep names a worker in its trials


def _wait(check: Callable[[], object], timeout: float, what: str, processes: list[subprocess.Popen]) -> object:
    """Poll `check` until it returns something true; fail with the workers' stderr if one ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        ended = [p for p in processes if p.poll() is not None]
        if ended:
            pytest.fail(f"a worker ended while waiting for {what}: {ended[0].communicate()[1][-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


_STORAGES: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _close_storages():
    """Close the test's own connections to each study when the test ends (its server is stopped then)."""
    yield
    for storage in _STORAGES.values():
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()
    _STORAGES.clear()


def _load(url: str, name: str):
    """The study as the workers see it, or None before a worker has created it.

    The storage is opened through fastcls's own open_storage: this test process is one more client
    racing the workers to create the database's tables, and open_storage retries that race."""
    import optuna

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None  # the worker has not made its sweep folder yet
    if url not in _STORAGES:
        _STORAGES[url] = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=_STORAGES[url])
    except KeyError:  # no worker has created it yet
        return None


def _running_trial(storage, name: str, worker: str):
    study = _load(storage, name)
    if study is None:
        return None
    running = [t for t in study.get_trials() if t.state.name == "RUNNING" and t.user_attrs.get("worker") == worker]
    return running[0] if running else None


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.communicate()


def test_postgres_study_finishes_when_a_worker_is_killed_mid_trial(tmp_path, space, class_folders, postgres_url):
    """Two workers on one PostgreSQL study; one is SIGKILLed while it trains. The other marks its trial
    failed once the heartbeat is 2 s old, runs its settings again (--retry-failed 1), and finishes.

    The survivor is held (SIGSTOP) from just before the kill until the dead trial's heartbeat is older
    than the grace period, so it certainly starts a trial after that: without the hold, whether a fast
    machine starts one in time would be luck."""

    out = tmp_path / "sweep"
    command = _command(class_folders, space, postgres_url, "pg", out, "--epochs", "1", "--heartbeat", "1")
    victim = _start([*command, "--trials", "1"])
    survivor = _start([*command, "--trials", "3", "--retry-failed", "1", "--json"])
    storage = postgres_url
    try:
        for worker in (victim, survivor):
            _wait(
                lambda w=worker: _running_trial(storage, "pg", _worker(w)),
                240,
                "both workers to train",
                [victim, survivor],
            )
        killed = _running_trial(storage, "pg", _worker(victim))
        os.kill(survivor.pid, signal.SIGSTOP)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        time.sleep(3.5)  # grace period (2 x heartbeat = 2 s) plus a heartbeat
        assert _running_trial(storage, "pg", _worker(victim)).number == killed.number  # nobody has looked yet
        os.kill(survivor.pid, signal.SIGCONT)
        stdout, stderr = survivor.communicate(timeout=300)
    finally:
        _stop([victim, survivor])
    assert victim.returncode == -signal.SIGKILL and survivor.returncode == 0, stderr
    assert json.loads(stdout)["ran"] == 3

    trials = _load(storage, "pg").trials
    assert len(trials) == 4  # the killed trial, and the survivor's three (one of them its retry)
    assert {t.number: t.state.name for t in trials} == {t.number: "COMPLETE" for t in trials} | {killed.number: "FAIL"}
    (retry,) = [t for t in trials if t.system_attrs.get("retry_history")]
    assert retry.system_attrs["retry_history"] == [killed.number] and retry.params == killed.params
    assert retry.user_attrs["worker"] == _worker(survivor) and retry.user_attrs["run"] != killed.user_attrs["run"]
    assert (Path(retry.user_attrs["run"]) / "model.safetensors").is_file()
    assert f"trial {killed.number} ({_worker(victim)}) stopped sending heartbeats: marked failed" in stderr

    rows = {int(r["number"]): r for r in csv.DictReader((out / "trials.csv").open())}
    assert rows[killed.number]["state"] == "fail"
    assert (
        rows[killed.number]["note"] == f"its worker stopped mid-trial (no heartbeat); retried as trial {retry.number}"
    )
    assert rows[retry.number]["note"] == f"retry of trial {killed.number}" and rows[retry.number]["state"] == "complete"


def test_two_workers_share_one_journal_file(tmp_path, space, class_folders):
    """The no-database option: two processes on one journal file run 2 trials each, 4 in the study."""
    import optuna

    (tmp_path / "shared").mkdir()
    url = f"journal://{tmp_path / 'shared' / 'sweep.log'}"
    out = tmp_path / "sweep"
    command = _command(class_folders, space, url, "journal", out, "--epochs", "1", "--trials", "2", "--heartbeat", "1")
    workers = [_start(command), _start([*command, "--json"])]
    try:
        results = [worker.communicate(timeout=300) for worker in workers]
    finally:
        _stop(workers)
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in results]
    assert json.loads(results[1][0])["ran"] == 2

    trials = optuna.load_study(study_name="journal", storage=open_storage(url)).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and {t.state.name for t in trials} == {"COMPLETE"}
    by_worker = [t.user_attrs["worker"] for t in trials]
    assert sorted(by_worker.count(_worker(w)) for w in workers) == [2, 2]
    assert all(isinstance(t.system_attrs.get(HEARTBEAT_ATTR), float) for t in trials)  # each trial beat
    assert len({t.user_attrs["run"] for t in trials}) == 4 and not (out / "sweep.db").exists()
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == 4


def test_a_trial_stopped_by_sigterm_is_queued_again(tmp_path, space, class_folders):
    """SIGTERM (a cluster preempting the job) stops the trial after its batch; with --retry-failed its
    settings are queued as a WAITING trial, which the next worker to ask takes before any new one
    (as the PostgreSQL test shows for a killed worker's trial)."""

    out = tmp_path / "sweep"
    command = _command(class_folders, space, None, "term", out, "--epochs", "15", "--retry-failed", "1")
    storage = f"sqlite:///{out / 'sweep.db'}"
    worker = _start([*command, "--trials", "2"])
    try:
        reported = lambda: (s := _load(storage, "term")) and any(t.intermediate_values for t in s.get_trials())  # noqa: E731
        _wait(reported, 240, "epoch 1", [worker])
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=120)
    finally:
        _stop([worker])
    assert worker.returncode == 130, stderr
    assert "SIGTERM after epoch" in stderr and "trial 0 was stopped; its settings run first" in stderr
    stopped, queued = _load(storage, "term").trials
    assert (stopped.state.name, queued.state.name) == ("FAIL", "WAITING") and queued.params == stopped.params
    assert queued.system_attrs["retry_history"] == [0] and queued.user_attrs == {}
    assert (Path(stopped.user_attrs["run"]) / "model.safetensors").is_file()  # the stopped run was saved
