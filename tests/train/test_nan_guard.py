"""A NaN/Inf loss stops training with a message that says where, keeping the last good epoch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from fastai.callback.core import CancelFitException
from typer.testing import CliRunner

import fastcls
from fastcls.cli.app import app
from fastcls.errors import TrainingDiverged
from fastcls.train.callbacks import NanGuard


def test_guard_stops_on_the_first_non_finite_training_loss():
    guard = NanGuard(history=[{"epoch": 1}])
    guard.learn = SimpleNamespace(loss_grad=torch.tensor(1.5), training=True, epoch=0, iter=3)
    guard.after_loss()
    assert guard.message is None
    guard.learn.loss_grad = torch.tensor(float("nan"))
    with pytest.raises(CancelFitException):
        guard.after_loss()
    assert guard.message == "the training loss became nan at epoch 2, batch 4"


def test_divergence_in_the_first_epoch_saves_nothing(tmp_path, class_folders):
    args = ["train", str(class_folders), "--lr", "100", "--opt", "sgd", "--momentum", "0.99", "--bs", "8"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "became" in result.stderr and "nothing was saved" in result.stderr
    assert not (tmp_path / "r").exists()


def test_divergence_later_keeps_the_last_good_epoch(tmp_path, class_folders, monkeypatch):
    real = NanGuard.after_loss

    def blow_up_in_epoch_three(self):
        if self.training and len(self.history) == 2:
            self.learn.loss_grad = self.learn.loss_grad * float("inf")
        real(self)

    monkeypatch.setattr(NanGuard, "after_loss", blow_up_in_epoch_three)
    config = fastcls.Config().merged(
        fastcls.Config.nest({"source": str(class_folders), "blocks": 2, "epochs": 4, "out": str(tmp_path / "r")})
    )
    with pytest.raises(TrainingDiverged, match=r"epoch 3, batch 1.*holds the last good epoch \(2\)"):
        fastcls.train_run(config, reporter="quiet")
    kept = fastcls.load(tmp_path / "r")
    assert [r["epoch"] for r in kept.history] == [1, 2] and kept.metrics["kept_epoch"] == 2
