"""The LR finder suggests LRs and leaves no trace: weights, BN statistics and the next fit."""

from __future__ import annotations

import torch

import fastcls
from fastcls.api import as_reporter


def trainer_for(data, **kw):
    clf = fastcls.ImageClassifier("cnn", blocks=3, epochs=2, seed=0, lr=3e-3, **kw)
    return clf, clf._prepare(clf._resolve(data, {}), as_reporter("quiet"), None)


def test_lr_find_leaves_no_trace(class_folders):
    clf, trainer = trainer_for(class_folders)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    result = trainer.lr_find(num_it=30)
    after = clf.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running_mean/var included
    assert sorted(result.suggestions) == ["minimum", "slide", "steep", "valley"]
    assert all(1e-7 <= lr <= 10 for lr in result.suggestions.values()) and len(result.lrs) == len(result.losses)
    with_find = trainer.fit()

    clf2, trainer2 = trainer_for(class_folders)
    without = trainer2.fit()
    assert [r["train_loss"] for r in with_find] == [r["train_loss"] for r in without]
    assert all(torch.equal(clf.model.state_dict()[k], clf2.model.state_dict()[k]) for k in before)


def test_lr_auto_records_the_pick_and_draws_the_plot(tmp_path, class_folders):
    config = fastcls.Config().merged(
        fastcls.Config.nest(
            {
                "source": str(class_folders),
                "blocks": 2,
                "epochs": 1,
                "lr_find": True,
                "lr_suggest": "steep",
                "out": str(tmp_path / "run"),
            }
        )
    )
    clf, path = fastcls.train_run(config, reporter="quiet")
    saved = fastcls.load_config(path / "config.toml")
    assert saved.train.lr == clf.lr_found.suggestions["steep"] and saved.train.lr_find is False
    assert (path / "plots" / "lr_find.png").stat().st_size > 10_000


def test_api_lr_find_keeps_the_classifier_as_it_was(class_folders):
    clf = fastcls.ImageClassifier("cnn", blocks=2)
    result = clf.lr_find(class_folders, quiet=True)
    assert clf.model is None and result.lr == result.suggestions["valley"]
