"""`--log tensorboard|wandb`: the trackers receive the same per-epoch rows as metrics.csv."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

import fastcls
from fastcls.cli.app import app
from fastcls.config import LOGGERS, Config
from fastcls.errors import ConfigError
from fastcls.runs import read_metrics
from fastcls.train.tracking import EPOCH_KEYS, TRACKERS


def _train(tmp_path, data, log: str, *extra: str):
    args = ["train", str(data), "--blocks", "2", "--filters", "8", "--epochs", "2", "--size", "8", "--bs", "16"]
    result = CliRunner().invoke(app, [*args, *extra, "--log", log, "--out", str(tmp_path / "r"), "-q"])
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


def _wandb_records(path):
    """(run id, [history steps]) of an offline .wandb file: LevelDB-style log records of W&B protobufs."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, run_id, steps = path.read_bytes(), 7, b"", None, []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or its last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "run":
                run_id = record.run.run_id
            elif record.WhichOneof("record_type") == "history":
                steps.append(record.history.step.num)
    return run_id, steps


def test_a_stopped_then_resumed_run_continues_one_wandb_run(tmp_path, class_folders, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = ["train", str(class_folders), "--blocks", "2", "--filters", "8", "--epochs", "3", "--size", "8"]
    out = tmp_path / "r"
    result = CliRunner().invoke(app, [*args, "--bs", "16", "--log", "wandb", "--out", str(out), "--stop-after", "1"])
    assert result.exit_code == 0, result.stderr
    run_id = (out / "wandb" / "fastcls-run-id").read_text().strip()
    time.sleep(1.1)  # W&B names an offline part by the second it starts: two parts in one second share a folder
    result = CliRunner().invoke(app, ["train", "--resume", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    parts = sorted((out / "wandb").glob("offline-run-*"), key=lambda p: p.name)
    assert [p.name.rsplit("-", 1)[1] for p in parts] == [run_id, run_id]  # one W&B run, written twice
    records = [_wandb_records(next(p.glob("run-*.wandb"))) for p in parts]
    assert [rid for rid, _ in records] == [run_id, run_id]
    assert [steps for _, steps in records] == [[1], [2, 3]]  # step = epoch: the resumed part continues it


def test_tensorboard_batch_lr_is_the_head_groups_not_the_boosted_groups(tmp_path, class_folders):
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ranking = tmp_path / "sensitivity.csv"
    with ranking.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "name", "shape", "numel", "score", "norm_score", "method", "per"])
        writer.writerow([1, "features.block1.conv.weight", "", 0, 1.0, 1.0, "grad-norm", "tensor"])
    settings = {"source": str(class_folders), "blocks": 2, "filters": 8, "epochs": 2, "size": 8, "bs": 16}
    settings |= {"log": "tensorboard", "boost_sensitive": f"{ranking}:1", "boost_lr": 1e-7, "out": str(tmp_path / "r")}
    _, run = fastcls.train_run(Config().merged(Config.nest(settings)), reporter="quiet")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    lrs = [e.value for e in events.Scalars("batch/lr")]
    rows = read_metrics(run / "metrics.csv")
    per_epoch = len(lrs) // len(rows)
    assert [lrs[per_epoch * (i + 1) - 1] for i in range(len(rows))] == [pytest.approx(r["lr"]) for r in rows]
    assert min(lrs) > 1e-6  # never the boosted group's 1e-7 peak
