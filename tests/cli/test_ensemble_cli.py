"""`fastcls ensemble vote` end to end: three small digits members at two image sizes vote on test."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fastcls
import fastcls.studies.ensemble.study as ensemble_module
from fastcls.cli.app import app
from fastcls.studies.ensemble import VOTE_METHODS

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _train(folder: Path, data: str | Path, size: int, seed: int, **cnn: int) -> Path:
    config = fastcls.Config().merged(
        {
            "model": {"arch": "cnn", "cnn": {"blocks": 2, "filters": 8, "dense": 32, **cnn}},
            "data": {"source": str(data), "size": size, "fraction": 0.5},
            "train": {"epochs": 2, "seed": seed},
            "run": {"out": str(folder)},
        }
    )
    return fastcls.train_run(config, reporter="quiet")[1]


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    """cnn at 8 px, cnn at 16 px with three blocks, and a wider cnn at 16 px."""
    root = tmp_path_factory.mktemp("ensemble-members")
    return [
        _train(root / "cnn8", "builtin:digits", 8, 0),
        _train(root / "cnn16", "builtin:digits", 16, 1, blocks=3),
        _train(root / "wide16", "builtin:digits", 16, 2, filters=16),
    ]


def _accuracy(rows: list[dict[str, str]], column: str) -> float:
    return sum(row[column] == row["true_label"] for row in rows) / len(rows)


def test_vote_table_files_and_predict_with_the_ensemble_json(members, tmp_path):
    out = tmp_path / "vote"
    result = invoke("ensemble", "vote", *members, "--data", "builtin:digits", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    for text in ("hard vote on builtin:digits (test, 359 images)", "cnn8", "cnn16", "wide16", "8px", "16px"):
        assert text in result.stdout
    assert "ensemble (hard)" in result.stdout and "agreement" in result.stdout and "ties go to" in result.stdout

    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 359
    assert list(rows[0]) == [
        "path",
        "cnn8",
        "cnn8_probability",
        "cnn16",
        "cnn16_probability",
        "wide16",
        "wide16_probability",
        "ensemble",
        "ensemble_score",
        "true_label",
    ]
    card = json.loads((out / "ensemble.json").read_text())
    assert card["members"] == [str(m.resolve()) for m in members] and card["method"] == "hard"
    assert card["prefer_source"] == "best on valid" and card["prefer"] in card["members"]
    assert card["scores"]["ensemble"]["accuracy"] == pytest.approx(_accuracy(rows, "ensemble"))
    for member, scores in zip(members, card["scores"]["members"], strict=True):
        own = fastcls.load(member).evaluate("builtin:digits", split="test").accuracy
        assert scores["accuracy"] == pytest.approx(_accuracy(rows, member.name)) == pytest.approx(own)

    threes = [row for row in rows if row["true_label"] == "3"]
    predicted = invoke("predict", out / "ensemble.json", *[row["path"] for row in threes], "--json")
    assert predicted.exit_code == 0, predicted.output
    labels = {p["path"]: p["label"] for p in json.loads(predicted.stdout)}
    assert labels == {row["path"]: row["ensemble"] for row in threes}


@pytest.mark.parametrize("method", list(VOTE_METHODS))
def test_json_for_every_method(members, tmp_path, method):
    result = invoke(
        "ensemble", "vote", *members, "--data", "builtin:digits", "--method", method, "-o", tmp_path, "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == method and summary["n"] == 359 and summary["out"] == str(tmp_path)
    assert [m["run"] for m in summary["members"]] == [str(m.resolve()) for m in members]
    assert {"accuracy", "top5", "log_loss"} <= set(summary["ensemble"])
    assert {"run", "accuracy", "top5", "log_loss", "weight", "cached"} <= set(summary["members"][0])
    accuracies = [m["accuracy"] for m in summary["members"]]
    if method == "soft":
        assert summary["ensemble"]["accuracy"] >= min(accuracies)
    assert summary["oracle"] >= max(accuracies)
    assert sum(summary["weights"]) == pytest.approx(1)
    assert summary["weights_source"].startswith("auto" if method == "weighted" else "equal")
    matrix = summary["agreement"]
    assert all(matrix[i][i] == 1 and matrix[i][j] == matrix[j][i] for i in range(3) for j in range(3))


def test_second_vote_with_another_method_runs_no_model(members, tmp_path, monkeypatch):
    first = invoke("ensemble", "vote", *members, "--data", "builtin:digits", "--method", "soft", "-o", tmp_path / "a")
    assert first.exit_code == 0, first.output

    def must_not_run(*args, **kwargs):
        raise AssertionError("a member was run although its predictions are cached")

    monkeypatch.setattr(ensemble_module, "run_member", must_not_run)
    monkeypatch.chdir(tmp_path)
    second = invoke(
        "ensemble",
        "vote",
        *members,
        "--data",
        "builtin:digits",
        "--method",
        "geometric",
        "--prefer",
        members[0],
        "--json",
    )
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert [m["cached"] for m in summary["members"]] == [True, True, True]
    assert summary["prefer"] == str(members[0].resolve()) and summary["prefer_source"] == "given"
    [folder] = tmp_path.glob("ensemble-*")  # the default --out
    assert {p.name for p in folder.iterdir()} == {"predictions.csv", "ensemble.json"}


def test_user_errors_are_one_line(members, tmp_path, split_folders):
    three = _train(tmp_path / "three", split_folders, 8, 0)
    mismatch = invoke("ensemble", "vote", members[0], three, "--data", "builtin:digits", "-o", tmp_path / "x")
    assert mismatch.exit_code == 1 and mismatch.stderr.startswith("error: ")
    assert f"{three.resolve()} lacks 3, 4, 5, 6, 7, 8, 9" in mismatch.stderr
    bad_method = invoke("ensemble", "vote", *members, "--data", "builtin:digits", "--method", "mean")
    assert bad_method.exit_code == 1 and "not one of hard, soft, weighted, geometric" in bad_method.stderr
    bad_weights = invoke("ensemble", "vote", *members, "--data", "builtin:digits", "--weights", "1,1,2")
    assert bad_weights.exit_code == 1 and "--weights is for --method weighted" in bad_weights.stderr
    assert not (tmp_path / "x").exists() and "Traceback" not in mismatch.output + bad_method.output


def test_vote_help_lists_the_methods_without_importing_torch():
    code = (
        "import sys\nfrom fastcls.cli.app import app\ntry:\n"
        "    app(['ensemble', 'vote', '--help'], prog_name='fastcls')\n"
        "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert all(name in out for name in VOTE_METHODS) and out.strip().endswith("NO-TORCH")
