"""Checkpoints keep last and both bests; --keep picks the saved model; early stop stops on time."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import fastcls
from fastcls.train.callbacks import EarlyStop


@pytest.mark.parametrize(
    ("monitor", "values", "patience", "stops_after"),
    [
        ("valid_loss", [1.0, 0.9, 0.95, 0.97, 0.5], 2, 4),
        ("valid_loss", [1.0, 0.9, 0.8, 0.7], 1, None),
        ("accuracy", [0.5, 0.7, 0.7, 0.6], 2, 4),
        ("accuracy", [0.5, 0.4, 0.8], 1, 2),
    ],
)
def test_early_stop_counts_epochs_without_improvement(monitor, values, patience, stops_after):
    stop = EarlyStop(monitor, patience, [])
    stopped_at = next((i + 1 for i, v in enumerate(values) if stop.update(v)), None)
    assert stopped_at == stops_after


def test_both_bests_are_kept_and_keep_chooses_the_model(tmp_path, class_folders):
    config = fastcls.Config().merged(
        fastcls.Config.nest(
            {
                "source": str(class_folders),
                "blocks": 2,
                "epochs": 4,
                "lr": 3e-2,
                "keep": "best-accuracy",
                "out": str(tmp_path / "run"),
            }
        )
    )
    clf, path = fastcls.train_run(config, reporter="quiet")
    names = sorted(p.name for p in (path / "checkpoints").iterdir())
    assert names == ["best-accuracy.safetensors", "best-valid_loss.safetensors", "last.safetensors"]
    card = json.loads((path / "model.json").read_text())
    best = max(range(4), key=lambda i: (clf.history[i]["accuracy"], -i)) + 1
    assert card["checkpoints"]["best-accuracy"] == best == card["metrics"]["kept_epoch"]
    saved, chosen = (
        load_file(str(path / "model.safetensors")),
        load_file(str(path / "checkpoints/best-accuracy.safetensors")),
    )
    assert all(torch.equal(saved[k], chosen[k]) for k in saved)
    assert card["metrics"]["accuracy"] == clf.history[best - 1]["accuracy"]


def test_early_stop_ends_training_before_the_planned_epochs(class_folders):
    clf = fastcls.ImageClassifier("cnn", blocks=2, epochs=8, lr=5.0, early_stop=1, seed=0)
    clf.fit(class_folders, quiet=True)
    rows = clf.history
    assert len(rows) < 8 and clf.metrics["stopped_early"]
    assert rows[-1]["valid_loss"] >= min(r["valid_loss"] for r in rows[:-1])  # the last epoch did not improve
