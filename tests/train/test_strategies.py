"""Strategies really happen: frozen tensors stay bit-identical, group LRs follow --lr-mult."""

from __future__ import annotations

import itertools

import pytest
import torch

import fastcls
from fastcls.config import TrainConfig
from fastcls.errors import ConfigError
from fastcls.train.strategies import STRATEGIES, Phase, group_lrs, parse_strategy, plan


def settings(strategy: str, **kw) -> TrainConfig:
    return TrainConfig(strategy=strategy, lr=1e-2, epochs=3, **kw)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_plans_its_epochs(name):
    text = "freeze-to:2" if name == "freeze-to" else name
    phases = plan(settings(text, freeze_epochs=2), n_groups=4)
    trained = sum(p.epochs for p in phases)
    assert trained == (5 if name == "freeze-unfreeze" else 3)
    assert all(0 <= p.frozen < 4 for p in phases)


def test_phases_match_fastai_fine_tune_and_ulmfit():
    frozen, unfrozen = plan(settings("freeze-unfreeze", freeze_epochs=1), 4)
    assert (frozen.frozen, frozen.lr, frozen.pct_start) == (3, 1e-2, 0.99)
    assert (unfrozen.frozen, unfrozen.lr, unfrozen.div, unfrozen.spread) == (0, 5e-3, 5.0, True)
    assert [p.frozen for p in plan(settings("progressive", unfreeze_every=1), 4)] == [3, 2, 1]


def test_group_lrs_are_geometric_over_lr_mult():
    lrs = group_lrs(Phase("x", 1, 0, 1e-2, spread=True), 5, lr_mult=100)
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-2)
    ratios = [b / a for a, b in itertools.pairwise(lrs)]
    assert ratios == pytest.approx([100 ** (1 / 4)] * 4)


@pytest.mark.parametrize(("text", "message"), [("freez", "Did you mean: freeze"), ("freeze-to", "needs a group")])
def test_bad_strategy_names(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_strategy(text)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def fit(data, **kw):
    clf = fastcls.ImageClassifier("cnn", **({"blocks": 3, "epochs": 2, "seed": 0} | kw))
    trainer = clf._prepare(clf._resolve(data, {}), fastcls.api.as_reporter("quiet"), None)
    before = snapshot(clf.model)
    clf.history = trainer.fit()
    return clf, trainer, before, snapshot(clf.model)


def test_freeze_to_keeps_frozen_groups_bit_identical_with_train_bn(class_folders):
    _, _, before, after = fit(class_folders, strategy="freeze-to:2", frozen_bn="train")
    moved = changed(before, after)
    for name in ("features.block1.conv.weight", "features.block2.conv.bias"):
        assert name not in moved
    assert {"features.block1.bn.weight", "features.block1.bn.running_mean"} <= moved  # BN stays trainable
    assert {"features.block3.conv.weight", "head.out.weight"} <= moved


def test_frozen_groups_keep_their_batchnorm_by_default(class_folders):
    _, trainer, before, after = fit(class_folders, strategy="freeze-to:2")
    moved = changed(before, after)
    assert not any(name.startswith(("features.block1.", "features.block2.")) for name in moved)
    assert {"features.block3.bn.running_mean", "head.out.weight"} <= moved
    assert all(p.grad is None for p in trainer.model.features.block1.parameters())  # no backward through it


def test_freeze_bn_freezes_batchnorm_and_its_statistics(class_folders):
    _, _, before, after = fit(class_folders, strategy="head", freeze_bn=True)
    moved = changed(before, after)
    assert all(name.startswith("head.") for name in moved) and "head.out.weight" in moved


def test_progressive_group_lrs_in_metrics_and_optimizer(class_folders):
    clf, trainer, _, _ = fit(class_folders, strategy="progressive", epochs=3, lr=1e-2, lr_mult=100)
    rows = clf.history
    assert [r["phase"] for r in rows] == ["head", "from-group-2", "from-group-1"]
    first = [float(x) for x in rows[0]["group_lrs"].split(";")]
    last = [float(x) for x in rows[-1]["group_lrs"].split(";")]
    assert first[:3] == [0, 0, 0] and first[3] > 0  # frozen groups get no LR
    assert last[0] == 0 and all(x > 0 for x in last[1:])
    step = 100 ** (1 / 3)  # four groups: block1..block3 and head
    assert last[2] / last[1] == pytest.approx(step, rel=0.02) and last[3] / last[2] == pytest.approx(step, rel=0.02)
    lrs = [h["lr"] for h in trainer.learn.opt.hypers]
    assert lrs[3] / lrs[0] == pytest.approx(100, rel=1e-6)  # frozen groups keep their place in the spread
