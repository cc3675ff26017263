"""`--log tensorboard|wandb`: the trackers receive the same per-epoch rows as metrics.csv."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fastcls.cli.app import app
from fastcls.config import LOGGERS, Config
from fastcls.errors import ConfigError
from fastcls.runs import read_metrics
from fastcls.train.tracking import EPOCH_KEYS, TRACKERS


def _train(tmp_path, data, log: str):
    args = ["train", str(data), "--blocks", "2", "--filters", "8", "--epochs", "2", "--size", "8", "--bs", "16"]
    result = CliRunner().invoke(app, [*args, "--log", log, "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0, result.stderr
    return tmp_path / "r"


def test_the_config_knows_every_tracker():
    assert tuple(TRACKERS) == LOGGERS
    assert Config().merged({"train": {"log": " tensorboard , csv"}}).train.log == "tensorboard,csv"
    with pytest.raises(ConfigError, match=r"'tensorbord' is not one of csv, tensorboard, wandb.*tensorboard"):
        Config().merged({"train": {"log": "tensorbord"}})


def test_tensorboard_gets_the_epoch_rows_and_a_continuous_batch_step(tmp_path, class_folders):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(tmp_path, class_folders, "csv,tensorboard")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    rows = read_metrics(run / "metrics.csv")
    for key in EPOCH_KEYS:
        logged = [(e.step, e.value) for e in events.Scalars(f"epoch/{key}")]
        assert logged == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in rows]
    steps = [e.step for e in events.Scalars("batch/train_loss")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 2 * (64 // 16)  # 80 images, 16 valid


def test_wandb_writes_an_offline_run_with_the_metrics(tmp_path, class_folders, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = _train(tmp_path, class_folders, "wandb")
    records = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(records) == 1
    content = records[0].read_bytes()
    assert all(key.encode() in content for key in EPOCH_KEYS)  # each metric was logged
    assert b"blocks" in content  # with the run's config
