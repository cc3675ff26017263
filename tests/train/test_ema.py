"""--ema: the average is scored each epoch, checkpointed, resumed exactly, and shipped with --keep ema."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import fastcls
from fastcls.errors import ConfigError

SETTINGS = {"blocks": 2, "filters": 8, "epochs": 3, "bs": 16, "seed": 2, "ema": 0.9}


def _config(source, out, **extra):
    return fastcls.Config().merged(fastcls.Config.nest(SETTINGS | {"source": str(source), "out": str(out)} | extra))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tests_support import write_class_folders

    return write_class_folders(tmp_path_factory.mktemp("ema") / "data", per_class=20, classes=4)


def test_ema_is_scored_checkpointed_and_shipped(tmp_path, data):
    clf, path = fastcls.train_run(_config(data, tmp_path / "r", keep="ema"), reporter="quiet")
    rows = clf.history
    assert all({"ema_valid_loss", "ema_accuracy", "ema_top5"} <= row.keys() for row in rows)
    ema = load_file(str(path / "checkpoints" / "ema.safetensors"))
    last = load_file(str(path / "checkpoints" / "last.safetensors"))
    shipped = load_file(str(path / "model.safetensors"))
    assert all(torch.equal(shipped[k], ema[k]) for k in ema)
    assert any(not torch.equal(ema[k], last[k]) for k in ema)  # the average is not the last weights
    assert clf.metrics["accuracy"] == rows[-1]["ema_accuracy"]  # the run reports the model it ships
    assert (path / "checkpoints" / "best-ema.safetensors").is_file()


def test_ema_resumes_bit_identically(tmp_path, data):
    whole, _ = fastcls.train_run(_config(data, tmp_path / "whole"), reporter="quiet")
    _, path = fastcls.train_run(_config(data, tmp_path / "r"), reporter="quiet", stop_after=1)
    resumed, _ = fastcls.resume_run(path, reporter="quiet")
    for name in ("ema", "last"):
        a = load_file(str(tmp_path / "whole" / "checkpoints" / f"{name}.safetensors"))
        b = load_file(str(path / "checkpoints" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [r["ema_valid_loss"] for r in resumed.history] == [r["ema_valid_loss"] for r in whole.history]


def test_keep_ema_needs_ema():
    with pytest.raises(ConfigError, match="--ema"):
        fastcls.Config().merged({"train": {"keep": "best-ema"}})
