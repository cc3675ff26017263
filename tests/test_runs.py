"""Run folders are written atomically and never overwritten by accident."""

from __future__ import annotations

import pytest

from fastcls.errors import RunError
from fastcls.runs import atomic_write_text, read_metrics, require_run, write_metrics
from fastcls.staging import StagedRun


def test_failed_run_leaves_nothing_behind(tmp_path):
    with pytest.raises(ValueError), StagedRun(tmp_path / "runs" / "x") as staged:
        atomic_write_text(staged.staging / "model.json", "{}")
        raise ValueError("training crashed")
    assert list((tmp_path / "runs").iterdir()) == []


def test_commit_moves_files_into_place_and_refuses_to_overwrite(tmp_path):
    with StagedRun(tmp_path / "x") as staged:
        atomic_write_text(staged.staging / "a.txt", "one")
        staged.commit()
    assert (tmp_path / "x" / "a.txt").read_text() == "one"
    with pytest.raises(RunError, match="already exists"):
        StagedRun(tmp_path / "x")
    (tmp_path / "x" / "mine.txt").write_text("keep me")
    with StagedRun(tmp_path / "x", exist_ok=True) as staged:
        atomic_write_text(staged.staging / "a.txt", "two")
        staged.commit()
    assert (tmp_path / "x" / "a.txt").read_text() == "two"
    assert (tmp_path / "x" / "mine.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_metrics_round_trip_and_require_run(tmp_path):
    rows = [
        {
            "epoch": 1,
            "train_loss": 0.5,
            "valid_loss": 0.4,
            "accuracy": 0.9,
            "top5": 1.0,
            "lr": 1e-3,
            "seconds": 1.5,
        }
    ]
    write_metrics(tmp_path / "metrics.csv", rows)
    assert read_metrics(tmp_path / "metrics.csv") == rows
    with pytest.raises(RunError, match="not a fastcls run folder"):
        require_run(tmp_path)
    with pytest.raises(RunError, match="does not exist"):
        require_run(tmp_path / "nope")


def test_atomic_writes_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    import os

    from fastcls.runs import atomic_write_text

    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
