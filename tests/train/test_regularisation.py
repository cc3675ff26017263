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


def test_dropout_flag_sets_the_head_dropout_of_a_timm_model(tmp_path):
    from fastcls.cli.train import _config
    from fastcls.models.registry import build_model, resolve_arch

    config = _config(None, {"arch": "resnet18", "dropout": 0.5})
    assert config.model.head_dropout == 0.5 and config.model.cnn.dropout == 0.2  # the cnn's own is untouched
    assert "head_dropout = 0.5" in config.to_toml()
    model = build_model(resolve_arch("resnet18"), 3, 32, head_dropout=config.model.head_dropout).train()
    assert model.drop_rate == 0.5
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))  # dropout is active in training
    model.eval()
    assert torch.equal(model(x), model(x))
    assert build_model(resolve_arch("resnet18"), 3, 32).drop_rate == 0.0  # the arch's default without the flag
    assert _config(None, {"dropout": 0.3}).model.cnn.dropout == 0.3  # cnn: its own dropout


def test_dropout_on_a_torchvision_model_without_one_is_a_clear_error():
    from fastcls.errors import ArchError
    from fastcls.models.registry import build_model, resolve_arch

    assert build_model(resolve_arch("torchvision:mobilenet_v3_small"), 3, 32, head_dropout=0.4).classifier[2].p == 0.4
    with pytest.raises(ArchError, match="has no dropout setting"):
        build_model(resolve_arch("torchvision:resnet18"), 3, 32, head_dropout=0.4)
