"""Exact resume: a run stopped after epoch k (--stop-after, Ctrl-C, SIGTERM) and resumed ends with the
same weights, metrics and strategy phase as a run that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import fastcls
from fastcls.cli.app import app
from fastcls.errors import Interrupted, RunError
from fastcls.train.callbacks import EpochLog
from fastcls.train.resume import RESUME_FILE, read_state

SETTINGS = {"blocks": 2, "filters": 8, "epochs": 4, "bs": 16, "seed": 5, "aug": "light", "mixup": 0.4}


def _config(source, out: Path, **extra):
    return fastcls.Config().merged(fastcls.Config.nest(SETTINGS | {"source": str(source), "out": str(out)} | extra))


def _same_weights(a, b) -> bool:
    left, right = a.model.state_dict(), b.model.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def _losses(clf) -> list[float]:
    return [round(row["train_loss"], 12) for row in clf.history]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from tests_support import write_class_folders

    root = tmp_path_factory.mktemp("resume")
    data = write_class_folders(root / "data", per_class=20, classes=4)
    clf, _ = fastcls.train_run(_config(data, root / "whole"), reporter="quiet")
    return data, clf


def test_stop_after_then_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted):
    data, whole = uninterrupted
    stopped, path = fastcls.train_run(_config(data, tmp_path / "r"), reporter="quiet", stop_after=2)
    assert stopped.stopped == "stop-after" and len(stopped.history) == 2 and stopped.planned_epochs == 4
    assert (path / "checkpoints" / RESUME_FILE).is_file()
    assert _losses(fastcls.load(path)) == _losses(stopped)  # a usable run already
    resumed, same = fastcls.resume_run(path, reporter="quiet")
    assert same == path and resumed.stopped is None
    assert _same_weights(resumed, whole) and _losses(resumed) == _losses(whole)
    assert _same_weights(fastcls.load(path), whole)  # the saved model too
    assert not (path / "checkpoints" / RESUME_FILE).exists()  # finished: nothing left to resume


def test_sigint_finishes_the_batch_saves_and_resumes_exactly(tmp_path, uninterrupted, monkeypatch):
    data, whole = uninterrupted
    real = EpochLog.after_batch

    def ctrl_c_in_epoch_three(self):
        real(self)
        if self.training and len(self.history) == 2 and self.iter == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(EpochLog, "after_batch", ctrl_c_in_epoch_three)
    with pytest.raises(Interrupted, match=r"SIGINT after epoch 2 of 4.*--resume"):
        fastcls.train_run(_config(data, tmp_path / "r"), reporter="quiet")
    monkeypatch.setattr(EpochLog, "after_batch", real)
    assert _losses(fastcls.load(tmp_path / "r")) == _losses(whole)[:2]
    resumed, _ = fastcls.resume_run(tmp_path / "r", reporter="quiet")
    assert _same_weights(resumed, whole) and _losses(resumed) == _losses(whole)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back


def test_sigint_in_the_first_epoch_saves_nothing(tmp_path, class_folders, monkeypatch):
    real = EpochLog.after_batch

    def ctrl_c(self):
        real(self)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(EpochLog, "after_batch", ctrl_c)
    with pytest.raises(Interrupted, match="before any epoch finished; nothing was saved"):
        fastcls.train_run(_config(class_folders, tmp_path / "r"), reporter="quiet")
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.partial"))


def test_resume_restores_the_unfrozen_phase_and_its_group_lrs(tmp_path, trained_run):
    settings = {"fraction": 0.1, "strategy": "freeze-unfreeze", "freeze_epochs": 1, "epochs": 2, "lr_mult": 100.0}
    settings |= {"command": "finetune"}
    settings |= {"pretrained": True, "weights": str(trained_run), "aug": "none", "mixup": 0.0}
    whole, _ = fastcls.train_run(_config("builtin:digits", tmp_path / "a", **settings), reporter="quiet")
    _, path = fastcls.train_run(_config("builtin:digits", tmp_path / "b", **settings), reporter="quiet", stop_after=2)
    resumed, _ = fastcls.resume_run(path, reporter="quiet")
    phases = [(row["phase"], row["group_lrs"]) for row in resumed.history]
    assert phases == [(row["phase"], row["group_lrs"]) for row in whole.history]
    assert [p for p, _ in phases] == ["frozen", "unfrozen", "unfrozen"]
    assert len(set(phases[2][1].split(";"))) > 1  # per-group LRs, not one LR for all
    assert _same_weights(resumed, whole)


def test_resume_state_loads_with_weights_only(tmp_path, class_folders):
    _, path = fastcls.train_run(_config(class_folders, tmp_path / "r", epochs=2), reporter="quiet", stop_after=1)
    state = torch.load(path / "checkpoints" / RESUME_FILE, weights_only=True)
    assert state["epoch"] == 1 and state["optimizer"]["state"] and set(state["rng"]) >= {"torch", "batches"}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_a_damaged_resume_file_is_a_clear_error(tmp_path, class_folders, damage):
    _, path = fastcls.train_run(_config(class_folders, tmp_path / "r", epochs=2), reporter="quiet", stop_after=1)
    file = path / "checkpoints" / RESUME_FILE
    if damage == "truncated":
        file.write_bytes(file.read_bytes()[:200])
    elif damage == "garbage":
        file.write_bytes(b"not a checkpoint at all")
    else:
        file.unlink()
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match="cannot be resumed"):
        read_state(file) if damage != "missing" else fastcls.resume_run(path, reporter="quiet")
    result = CliRunner().invoke(app, ["train", "--resume", str(path)])
    assert result.exit_code == 1 and "cannot be resumed" in result.stderr and "Traceback" not in result.stderr
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before  # the run is untouched


def test_cli_resume_rules(tmp_path, class_folders):
    runner = CliRunner()
    args = ["train", str(class_folders), "--blocks", "2", "--filters", "8", "--epochs", "2", "--size", "8"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "r"), "--stop-after", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    assert '"stopped": "stop-after"' in result.stdout and '"planned_epochs": 2' in result.stdout
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--epochs", "9"])
    assert result.exit_code == 1 and "drop --epochs" in result.stderr
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--stop-after", "1"])
    assert result.exit_code == 1 and "--stop-after 1 is not after epoch 1" in result.stderr
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0 and '"epochs": 2' in result.stdout and '"stopped": null' in result.stdout
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r")])
    assert result.exit_code == 1 and "nothing to resume" in result.stderr
    result = runner.invoke(app, ["train", "--blocks", "2"])
    assert result.exit_code == 1 and "DATA is missing" in result.stderr


def test_sigterm_to_the_cli_saves_a_resumable_run_and_exits_130(tmp_path, class_folders):
    out = tmp_path / "r"
    args = ["train", str(class_folders), "--blocks", "2", "--filters", "8", "--epochs", "200", "--out", str(out), "-q"]
    process = subprocess.Popen([sys.executable, "-m", "fastcls", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".r.partial/checkpoints/resume.pt")) and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "SIGTERM after epoch" in stderr and "--resume" in stderr
    card = fastcls.load(out).model_card()
    assert card["stopped"] == "SIGTERM" and 1 <= card["epochs"] < 200
    assert read_state(out / "checkpoints" / RESUME_FILE)["epoch"] == card["epochs"]
