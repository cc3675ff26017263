"""Sensitivity-guided fine-tuning: `--freeze-sensitive FILE:K` keeps K tensors bit-identical;
`--boost-sensitive FILE:K --boost-lr X --boost-wd Y` trains them in their own optimiser group."""

from __future__ import annotations

import csv

import pytest
import torch
from fastai.callback.core import Callback
from typer.testing import CliRunner

import fastcls
from fastcls.api import as_reporter
from fastcls.cli.app import app
from fastcls.errors import ConfigError

RANKED = ["features.block2.conv.weight", "head.fc.weight", "features.block1.conv.weight", "head.out.weight"]


@pytest.fixture
def ranking(tmp_path):
    path = tmp_path / "sensitivity.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "name", "shape", "numel", "score", "norm_score", "method", "per"])
        for rank, name in enumerate(RANKED, 1):
            writer.writerow([rank, name, "", 0, 1 / rank, 1 / rank, "grad-norm", "tensor"])
    return path


def _settings(trained_run, tmp_path, **extra):
    settings = {"source": "builtin:digits", "fraction": 0.1, "pretrained": True, "weights": str(trained_run)}
    settings |= {"command": "finetune", "strategy": "freeze-unfreeze", "epochs": 2, "out": str(tmp_path / "r")}
    return fastcls.Config().merged(fastcls.Config.nest(settings | extra))


def test_frozen_sensitive_tensors_stay_bit_identical_through_every_phase(tmp_path, trained_run, ranking):
    before = fastcls.load(trained_run).model.state_dict()
    clf, path = fastcls.train_run(_settings(trained_run, tmp_path, freeze_sensitive=f"{ranking}:2"), reporter="quiet")
    after = clf.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in RANKED[:2])
    assert not torch.equal(before[RANKED[2]], after[RANKED[2]])  # the rest trained (unfrozen phase)
    card = fastcls.load(path).model_card()
    assert fastcls.load(path).config.train.freeze_sensitive == f"{ranking}:2"
    assert (path / "model.json").read_text().count(RANKED[0]) == 1 and card["arch"] == "cnn"


class GroupProbe(Callback):
    order = 30  # after BoostClip (20)

    def __init__(self, names):
        self.names, self.seen, self.norms = names, [], []

    def before_step(self):
        lookup = dict(self.learn.model.named_parameters())
        grads = [lookup[n].grad for n in self.names if lookup[n].grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        boosted = {id(lookup[n]) for n in self.names}
        for hyper, group in zip(self.opt.hypers, self.opt.param_lists, strict=True):
            if {id(p) for p in group} == boosted:
                self.seen.append((hyper["lr"], hyper["wd"]))


def test_boosted_tensors_get_their_own_lr_and_wd(tmp_path, trained_run, ranking):
    config = _settings(
        trained_run,
        tmp_path,
        boost_sensitive=f"{ranking}:2",
        boost_lr=0.05,
        boost_wd=0.3,
        boost_clip=0.01,
        epochs=1,
        bs=8,
    )
    clf = fastcls.ImageClassifier.from_config(config)
    trainer = clf._prepare(config, as_reporter("quiet"), None)
    probe = GroupProbe(RANKED[:2])
    trainer.learn.add_cb(probe)
    trainer.fit()
    peak = max(lr for lr, _ in probe.seen)
    assert 0.045 < peak <= 0.05  # the one-cycle curve, peaking at --boost-lr
    assert {wd for _, wd in probe.seen} == {0.3}
    assert max(probe.norms) <= 0.01 * 1.001  # --boost-clip
    assert trainer.groups[-1] == "boosted" and len(trainer.learn.opt.param_lists) == trainer.layer_group_count + 1
    others = [p for group in trainer.learn.opt.param_lists[:-1] for p in group]
    assert not {id(p) for p in others} & {id(p) for p in trainer.learn.opt.param_lists[-1]}


def test_sensitivity_options_are_checked(tmp_path, trained_run, ranking):
    with pytest.raises(ConfigError, match="needs --boost-lr"):
        _settings(trained_run, tmp_path, boost_sensitive=f"{ranking}:1")
    with pytest.raises(ConfigError, match="without boost_sensitive"):
        _settings(trained_run, tmp_path, boost_wd=0.1)
    with pytest.raises(ConfigError, match="both frozen and boosted"):
        fastcls.train_run(
            _settings(
                trained_run, tmp_path, freeze_sensitive=f"{ranking}:1", boost_sensitive=f"{ranking}:1", boost_lr=1e-3
            ),
            reporter="quiet",
        )
    other = tmp_path / "other.csv"
    other.write_text(ranking.read_text().replace("features.block2", "blocks.9"))
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            "builtin:digits",
            "--arch",
            "cnn",
            "--weights",
            str(trained_run),
            "--freeze-sensitive",
            f"{other}:1",
        ],
    )
    assert result.exit_code == 1 and "does not have" in result.stderr and "Traceback" not in result.stderr
