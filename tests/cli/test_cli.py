"""The command line: exit codes, one-line errors for bad input, files written, JSON output."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fastcls.cli.app import app
from tests_support import make_bad_layout

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_is_instant_and_does_not_import_torch():
    code = (
        "import sys\nfrom fastcls.cli.app import app\ntry:\n    app(['--help'], prog_name='fastcls')\n"
        "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "train" in out and out.strip().endswith("NO-TORCH")


def test_module_entry_point_and_version():
    out = subprocess.run([sys.executable, "-m", "fastcls", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "fastcls 0.1.0"


def test_train_json_then_evaluate_predict_runs_ls_and_repeat(tmp_path, split_folders):
    runs = tmp_path / "runs"
    result = invoke(
        "train", split_folders, "--blocks", "2", "--epochs", "2", "--runs-dir", runs, "--name", "a", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run"] == str(runs / "a") and summary["epochs"] == 2 and 0 <= summary["test_accuracy"] <= 1

    evaluation = json.loads(invoke("evaluate", runs / "a", "--split", "valid", "--json").stdout)
    assert evaluation["split"] == "valid" and evaluation["n"] == 15
    assert sum(map(sum, evaluation["confusion"])) == 15 and set(evaluation["per_class"]) == {"0", "1", "2"}

    preds = tmp_path / "preds.csv"
    result = invoke("predict", runs / "a", split_folders / "test", "--out", preds, "--top", "2")
    assert result.exit_code == 0
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 15 and set(rows[0]) >= {"path", "label", "probability", "top2"}

    listed = json.loads(invoke("runs", "ls", runs, "--json").stdout)
    assert [r["path"] for r in listed] == [str(runs / "a")]

    repeat = invoke("run", runs / "a" / "config.toml", "--name", "b", "--quiet")
    assert repeat.exit_code == 0, repeat.output

    def without_seconds(run):
        return [
            {k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader((run / "metrics.csv").open())
        ]

    assert without_seconds(runs / "a") == without_seconds(runs / "b")  # same config and seed: the same run


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "no images in class folders"),
        ("one_class", "only one class"),
        ("differing", "class sets differ"),
    ],
)
def test_bad_data_is_one_line_and_exit_1(tmp_path, layout, message):
    result = invoke("train", make_bad_layout(tmp_path, layout), "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_arch_bad_values_and_bad_images(tmp_path, class_folders):
    arch = invoke("train", class_folders, "--arch", "resnet19")
    assert arch.exit_code == 1 and "Did you mean: resnet18" in arch.stderr
    value = invoke("train", class_folders, "--on-bad-image", "ignore")
    assert value.exit_code == 1 and "not one of skip, error" in value.stderr
    usage = invoke("train", class_folders, "--epochs", "many")
    assert usage.exit_code == 2
    (class_folders / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    bad = invoke("train", class_folders, "--epochs", "1", "--on-bad-image", "error", "--out", tmp_path / "r")
    assert bad.exit_code == 1 and "unreadable image" in bad.stderr and not (tmp_path / "r").exists()


def test_not_a_run_and_existing_run_are_refused(tmp_path, trained_run):
    result = invoke("evaluate", tmp_path)
    assert result.exit_code == 1 and "not a fastcls run folder" in result.stderr
    before = {p.name: p.stat().st_mtime_ns for p in trained_run.iterdir()}
    again = invoke("train", "builtin:digits", "--epochs", "1", "--out", trained_run)
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in trained_run.iterdir()} == before
    assert not [p for p in trained_run.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-m", "fastcls", "--debug", "evaluate", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 1 and "Traceback" in out.stderr and "RunError" in out.stderr


def test_data_check_and_summary(tmp_path, split_folders):
    ok = invoke("data", "check", split_folders, "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["counts"]["valid"] == {"0": 5, "1": 5, "2": 5}
    bad = invoke("data", "check", make_bad_layout(tmp_path, "one_class"))
    assert bad.exit_code == 1 and "only one class" in bad.stdout
    summary = json.loads(invoke("summary", "--arch", "cnn", "--blocks", "2", "--size", "16", "--json").stdout)
    assert summary["params"] > 0 and summary["flops"] > 0 and summary["groups"][-1]["name"] == "head"


def test_loader_augmentation_and_balance_flags_reach_the_run(tmp_path, class_folders):
    out = tmp_path / "flags"
    result = invoke(
        "train", class_folders, "--epochs", "1", "--blocks", "1", "--filters", "4", "--size", "8",
        "--loader", "stream", "--workers", "0", "--aug", "light", "--vflip", "0.3", "--auto-aug", "trivialaugment",
        "--balance", "sampler", "--out", out, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout
    import tomllib

    data = tomllib.loads((out / "config.toml").read_text())["data"]
    assert (data["loader"], data["balance"], data["workers"]) == ("stream", "sampler", 0)
    assert data["aug"] == {"preset": "light", "vflip": 0.3, "auto_aug": "trivialaugment"}
    again = invoke("run", out / "config.toml", "--out", tmp_path / "again", "--quiet")
    assert again.exit_code == 0, again.stdout
    bad = invoke("train", class_folders, "--loader", "disk", "--out", tmp_path / "bad")
    assert bad.exit_code == 1 and "loader='disk' is not one of auto, memory, stream" in bad.stderr
