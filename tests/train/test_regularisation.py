"""MixUp/CutMix mix inputs and targets during training only; gradient clipping caps the norm."""

from __future__ import annotations

import pytest
import torch
from fastai.callback.core import Callback

import fastcls
from fastcls.api import as_reporter
from fastcls.errors import ConfigError


class Probe(Callback):
    """Records whether each training batch used the mixed loss, and the gradient norm at each step."""

    order = 90

    def __init__(self) -> None:
        self.mixed, self.swapped, self.norms = [], [], []

    def before_batch(self) -> None:
        if self.training:
            self.swapped.append(getattr(self.learn.loss_func, "__name__", "") == "lf")

    def before_step(self) -> None:
        grads = [p.grad.norm() for p in self.learn.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.stack(grads).norm()))


def trainer_with_probe(data, **options):
    clf = fastcls.ImageClassifier("cnn", **({"blocks": 2, "epochs": 1, "seed": 0, "lr": 1e-2} | options))
    trainer = clf._prepare(clf._resolve(data, {}), as_reporter("quiet"), None)
    probe = Probe()
    trainer.learn.add_cb(probe)
    return trainer, probe


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_swaps_in_the_soft_target_loss_for_training_only(class_folders, kind):
    trainer, probe = trainer_with_probe(class_folders, **{kind: 0.4})
    trainer.fit()
    assert probe.swapped and all(probe.swapped)  # the mixed loss during every training batch
    assert trainer.learn.loss_func.__class__.__name__ == "CrossEntropy"  # restored for validation
    assert 0 <= trainer.history[-1]["accuracy"] <= 1

    plain, plain_probe = trainer_with_probe(class_folders)
    plain.fit()
    assert not any(plain_probe.swapped)
    assert trainer.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_clip_grad_caps_the_gradient_norm(class_folders):
    trainer, probe = trainer_with_probe(class_folders, clip_grad=0.05, epochs=2, bs=16)
    trainer.fit()
    assert probe.norms and max(probe.norms) <= 0.05 + 1e-5
    free, free_probe = trainer_with_probe(class_folders, epochs=2, bs=16)
    free.fit()
    assert max(free_probe.norms) > 0.05


def test_mixup_and_cutmix_are_exclusive():
    with pytest.raises(ConfigError, match="exclusive"):
        fastcls.ImageClassifier("cnn", mixup=0.4, cutmix=1.0)
