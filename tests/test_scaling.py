"""Scaling studies: the grid, the same budget per cell, reuse of finished cells, and refusals."""

from __future__ import annotations

import csv

import pytest

from fastcls.config import Config
from fastcls.errors import ConfigError, RunError
from fastcls.studies.scaling import INITS, _cell_config, fraction_label, parse_list, scaling

TINY = {"blocks": 2, "filters": 8, "bs": 16}


@pytest.mark.parametrize("name", INITS)
def test_every_init_gives_cells_the_same_epoch_budget(tmp_path, name):
    init = INITS[name]
    config = _cell_config(Config(), "efficientnet_lite0", init, 0.25, 4, tmp_path / "cell")
    assert config.command == init.command and config.model.pretrained == init.pretrained
    assert config.data.fraction == 0.25 and config.run.out == str(tmp_path / "cell")
    head = config.train.freeze_epochs if init.pretrained else 0
    assert config.train.epochs + head == 4  # freeze-unfreeze spends its head epochs out of the budget
    if not init.pretrained:
        assert config.train.strategy == "full"


def test_budget_too_small_for_the_head_phase_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="--epochs 2 or more"):
        _cell_config(Config(), "efficientnet_lite0", INITS["pretrained"], 1.0, 1, tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"archs": "cnn", "inits": "none,pretrained"}, "'cnn' has no pretrained weights"),
        ({"archs": "cnn", "inits": "pretraned"}, "Did you mean: pretrained"),
        ({"archs": "cnn", "fractions": "1/0"}, "is not a number"),
        ({"archs": "cnn,cnn"}, "names an entry twice"),
        ({"archs": "cnn", "settings": {"fraction": 0.5}}, "set by the scaling grid"),
    ],
)
def test_bad_grids_fail_before_training(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        scaling("builtin:digits", out=tmp_path, **kwargs)


def test_labels_and_lists():
    assert fraction_label(1 / 16) == "1-16" and fraction_label(1.0) == "1" and fraction_label(0.5) == "1-2"
    assert parse_list("a, b", "arch") == ["a", "b"] and parse_list(["a"], "arch") == ["a"]


def test_tiny_grid_trains_each_cell_then_reuses_them(tmp_path, class_folders):
    out = tmp_path / "study"
    result = scaling(class_folders, "cnn", "1/2,1", epochs=1, out=out, settings=TINY)
    assert [(c.fraction, c.train_images, c.epochs, c.reused) for c in result.cells] == [
        (0.5, 32, 1, False),
        (1.0, 64, 1, False),
    ]
    for cell in result.cells:
        assert 0 <= cell.train_accuracy <= 1 and 0 <= cell.valid_accuracy <= 1
        assert (out / "cells" / f"cnn-none-{cell.label}" / "model.safetensors").is_file()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["fraction"] for r in rows] == ["0.5", "1.0"] and rows[0]["train_images"] == "32"
    assert (out / "plots" / "scaling.png").read_bytes()[:4] == b"\x89PNG"

    again = scaling(class_folders, "cnn", "1", epochs=1, out=out, settings=TINY)
    assert [c.reused for c in again.cells] == [True] and len(again.all_cells) == 2
    assert again.cells[0].valid_accuracy == result.cells[1].valid_accuracy
    with pytest.raises(ConfigError, match=r"train\.epochs \(1 then, 2 now\)"):
        scaling(class_folders, "cnn", "1", epochs=2, out=out, settings=TINY)
    (out / "cells" / "cnn-none-1" / "cell.json").unlink()  # as if interrupted before the cell was recorded
    with pytest.raises(RunError, match="delete it and run again"):
        scaling(class_folders, "cnn", "1", epochs=1, out=out, settings=TINY)
