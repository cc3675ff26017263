"""Optimisers and schedules are registry entries with visible effects on training."""

from __future__ import annotations

import pytest
import torch

import fastcls
from fastcls.api import as_reporter
from fastcls.errors import ConfigError
from fastcls.train.optim import OPTIMIZERS, SCHEDULES


def fit(data, **options):
    clf = fastcls.ImageClassifier("cnn", **({"blocks": 2, "epochs": 3, "seed": 0, "lr": 1e-2} | options))
    trainer = clf._prepare(clf._resolve(data, {}), as_reporter("quiet"), None)
    return trainer, trainer.fit()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimiser_trains(class_folders, name):
    trainer, rows = fit(class_folders, opt=name, epochs=2, lr=3e-3)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    inner = getattr(trainer.learn.opt, "opt", trainer.learn.opt)
    expected = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "lamb": "Optimizer", "ranger": "Optimizer"}[name]
    assert type(inner).__name__ == expected  # lamb and ranger are fastai's own Optimizer


def test_step_schedule_drops_at_each_step(class_folders):
    _, rows = fit(class_folders, sched="step", step_size=1, gamma=0.1)
    assert [r["lr"] for r in rows] == pytest.approx([1e-2, 1e-3, 1e-4])


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_shape_the_lr(class_folders, name):
    _, rows = fit(class_folders, sched=name, epochs=4, bs=16)  # 4 batches an epoch
    lrs = [r["lr"] for r in rows]
    assert lrs[-1] < lrs[0] or name == "one-cycle"
    if name == "flat-cos":
        assert lrs[0] == pytest.approx(1e-2) and lrs[1] == pytest.approx(1e-2)  # flat for 75%
    if name == "cosine":
        assert lrs == sorted(lrs, reverse=True)
    if name == "one-cycle":
        assert lrs[0] < 1e-2 and lrs[-1] < max(lrs) / 10  # still warming up after epoch 1, then annealed


def test_label_smoothing_reaches_the_loss(class_folders):
    trainer, _ = fit(class_folders, label_smoothing=0.2, epochs=1)
    assert trainer.learn.loss_func.label_smoothing == 0.2
    x, y = next(iter(trainer.learn.dls.valid))
    smooth = trainer.learn.loss_func(trainer.model.eval()(x), y)
    plain = torch.nn.functional.cross_entropy(trainer.model(x), y)
    assert not torch.isclose(smooth, plain)


def test_unknown_names_fail_before_training(class_folders):
    with pytest.raises(ConfigError, match=r"Did you mean: .*adamw"):
        fastcls.ImageClassifier("cnn", opt="adamv").fit(class_folders, quiet=True)
    with pytest.raises(ConfigError, match="Did you mean: cosine"):
        fastcls.ImageClassifier("cnn", sched="cosin").fit(class_folders, quiet=True)
