"""Runs survive kill -9: real `fastcls train` processes are SIGKILLed at known points (harness in
tests/pause_harness.py), then continued; the result is bit-identical to a run never stopped."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import fastcls
from fastcls.cli.app import app
from fastcls.staging import MARKER, find_staging, partial_path
from fastcls.train.resume import resumable_epoch

HARNESS = Path(__file__).parent.parent / "pause_harness.py"
FLAGS = ["--blocks", "2", "--filters", "8", "--epochs", "4", "--bs", "16", "--seed", "5", "--aug", "light"]
FLAGS += ["--mixup", "0.4", "-q"]
POINTS = {  # the run's name: where it is killed
    "mid": "mid-epoch:2",
    "torn-resume": "writing:resume.pt#2",
    "publishing": "publishing:2",
    "after": "after-epoch:2",
}
RESUMES_AFTER = {"mid": 1, "torn-resume": 1, "publishing": 2, "after": 2}


def _harness(point: str, signal_file: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, str(HARNESS), point, str(signal_file), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(files: list[Path], processes: list[subprocess.Popen], timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not all(f.exists() for f in files):
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"harness ended early ({process.returncode}): {process.stderr.read()}")
        assert time.time() < deadline, "the harness never reached its pause point"
        time.sleep(0.05)


def _rows(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(path.open())]


def _tensors(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    files = [run / "model.safetensors", *sorted((run / "checkpoints").glob("*.safetensors"))]
    return {f.name: load_file(f) for f in files}


def _same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> bool:
    return a.keys() == b.keys() and all(
        a[f].keys() == b[f].keys() and all(torch.equal(a[f][k], b[f][k]) for k in a[f]) for f in a
    )


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """One uninterrupted run, and one run SIGKILLed at each point (all started at once)."""
    from tests_support import write_class_folders

    root = tmp_path_factory.mktemp("kill")
    data = write_class_folders(root / "data", per_class=20, classes=4)
    runs = root / "runs"
    processes, signals = [], []
    for name, point in POINTS.items():
        signals.append(root / f"{name}.paused")
        processes.append(_harness(point, signals[-1], "train", data, *FLAGS, "--out", runs / name))
    whole = CliRunner().invoke(app, ["train", str(data), *FLAGS, "--out", str(runs / "whole")])
    assert whole.exit_code == 0, whole.stderr
    _wait_for(signals, processes)
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL
    return data, runs


def test_a_kill_leaves_the_last_finished_epoch_and_runs_ls_says_how_to_resume(killed):
    _, runs = killed
    for name, epoch in RESUMES_AFTER.items():
        assert not (runs / name).exists()  # nothing half-written at the run's place
        assert resumable_epoch(partial_path(runs / name)) == (epoch, ""), name
    assert list((partial_path(runs / "torn-resume") / "checkpoints").glob(".resume.pt.*.tmp"))  # the torn write
    assert list((partial_path(runs / "publishing") / "checkpoints").glob(".last.epoch-2.safetensors"))
    listed = CliRunner().invoke(app, ["runs", "ls", str(runs), "--json"])
    entries = {Path(e["path"]).name: e for e in json.loads(listed.stdout)}
    assert entries["whole"]["status"] == "finished"
    mid = entries[".mid.partial"]
    assert mid["status"] == "interrupted" and mid["resume_epoch"] == 1
    assert mid["resume_command"] == f"fastcls train --resume {runs / 'mid'}"
    table = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["runs", "ls", str(runs)]).stdout
    assert "interrupted after epoch 2" in table and f"fastcls train --resume {runs / 'after'}" in table


@pytest.mark.parametrize("name", list(POINTS))
def test_continuing_after_the_kill_is_bit_identical_to_the_uninterrupted_run(killed, name):
    data, runs = killed
    runner = CliRunner()
    if name in ("mid", "publishing"):  # the same command again continues it, and says so
        result = runner.invoke(app, ["train", str(data), *FLAGS[:-1], "--out", str(runs / name), "--json"])
        assert result.exit_code == 0, result.stderr
        assert f"resuming {runs / name}: it was interrupted after epoch {RESUMES_AFTER[name]}" in result.stderr
        assert json.loads(result.stdout)["resumed_after"] == RESUMES_AFTER[name]
    else:  # --resume with the run's path, or with the staging folder's
        target = partial_path(runs / name) if name == "after" else runs / name
        result = runner.invoke(app, ["train", "--resume", str(target), "-q"])
        assert result.exit_code == 0, result.stderr
    run = runs / name
    assert not partial_path(run).exists() and not (run / MARKER).exists()
    assert not (run / "checkpoints" / "resume.pt").exists()  # finished
    assert _same(_tensors(run), _tensors(runs / "whole"))  # model and every checkpoint, bit for bit
    assert _rows(run / "metrics.csv") == _rows(runs / "whole" / "metrics.csv")
    assert fastcls.load(run).model_card()["epochs"] == 4


def test_the_same_out_with_other_settings_is_refused_naming_the_difference(tmp_path, class_folders):
    flags = ["--blocks", "2", "--filters", "8", "--epochs", "3", "--bs", "16", "-q"]
    out = tmp_path / "runs" / "x"
    signal_file = tmp_path / "paused"
    process = _harness("after-epoch:1", signal_file, "train", class_folders, *flags, "--out", out)
    _wait_for([signal_file], [process])
    process.kill()
    process.wait(timeout=60)
    before = {p: p.read_bytes() for p in partial_path(out).rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, ["train", str(class_folders), *flags, "--lr", "0.01", "--out", str(out)])
    assert result.exit_code == 1 and "started with other settings: train.lr (None then, 0.01 now)" in result.stderr
    assert {p: p.read_bytes() for p in partial_path(out).rglob("*") if p.is_file()} == before  # untouched
    assert not out.exists()


def test_runs_clean_asks_then_removes_what_cannot_be_resumed(tmp_path, class_folders):
    runs = tmp_path / "runs"
    signal_file = tmp_path / "paused"
    flags = ["--blocks", "2", "--filters", "8", "--epochs", "2", "--bs", "16", "-q"]
    process = _harness("mid-epoch:1", signal_file, "train", class_folders, *flags, "--out", runs / "young")
    (runs / ".old.staging-abc123").mkdir(parents=True)  # left by an older fastcls
    _wait_for([signal_file], [process])
    listed = {s.path.name: s.status for s in find_staging(runs)}
    assert listed == {".old.staging-abc123": "leftover", ".young.partial": "training"}
    process.kill()
    process.wait(timeout=60)
    assert find_staging(runs)[1].reason == "no finished epoch"
    runner = CliRunner()
    declined = runner.invoke(app, ["runs", "clean", str(runs)], input="n\n")
    assert declined.exit_code == 0 and "nothing removed" in declined.stdout
    assert len(find_staging(runs)) == 2
    result = runner.invoke(app, ["runs", "clean", str(runs), "--yes"])
    assert result.exit_code == 0 and "removed 2 folder(s)" in result.stdout
    assert list(runs.iterdir()) == []


def test_two_trainings_of_one_run_at_once_give_one_run_and_one_clear_exit_1(tmp_path, class_folders):
    out = tmp_path / "runs" / "x"
    flags = ["--blocks", "2", "--filters", "8", "--epochs", "2", "--bs", "16", "-q", "--out", str(out)]
    signals = [tmp_path / "a.paused", tmp_path / "b.paused"]
    processes = [_harness("mid-epoch:1", s, "train", class_folders, *flags) for s in signals]
    deadline = time.time() + 240
    while not any(p.poll() is not None for p in processes):  # the one that does not get the lock ends
        assert time.time() < deadline
        time.sleep(0.05)
    loser = next(p for p in processes if p.poll() is not None)
    winner, go = next((p, s) for p, s in zip(processes, signals, strict=True) if p is not loser)
    _wait_for([go], [winner])
    go.with_name(go.name + ".go").touch()
    _, stderr = loser.communicate(timeout=60)
    assert loser.returncode == 1, stderr
    assert stderr.startswith(f"error: run {out} is being trained by another process")
    assert "Traceback" not in stderr
    _, stderr = winner.communicate(timeout=240)
    assert winner.returncode == 0, stderr
    assert fastcls.load(out).model_card()["epochs"] == 2 and len(_rows(out / "metrics.csv")) == 2
    assert [p.name for p in out.parent.iterdir()] == ["x"]  # no staging folder left
