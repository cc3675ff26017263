"""`fastcls sensitivity`: files written into the run (or beside --out), the table, --json, errors."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from typer.testing import CliRunner

from fastcls.cli.app import app
from fastcls.studies.sensitivity import CSV_COLUMNS, METHODS, read_sensitive

runner = CliRunner()


def invoke(*args):
    # a wide console, so the table shows whole tensor names whatever the tmp path's length
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


@pytest.fixture
def run(trained_run, tmp_path):
    """A copy of the session's trained run, so the files written here stay out of the shared one."""
    return shutil.copytree(trained_run, tmp_path / "run")


def test_writes_csv_and_plots_into_the_run_and_prints_the_table(run):
    result = invoke("sensitivity", run, "--batches", "2", "--bs", "16", "--top", "4", "--quiet")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((run / "sensitivity.csv").open()))
    assert tuple(rows[0]) == CSV_COLUMNS and [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    assert {r["method"] for r in rows} == {"grad-norm"} and {r["per"] for r in rows} == {"tensor"}
    for name in ("sensitivity_top.png", "sensitivity_depth.png"):
        assert (run / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert "grad-norm sensitivity" in result.stdout and rows[0]["name"] in result.stdout
    assert rows[4]["name"] not in result.stdout.split("wrote")[0]  # --top 4 rows in the table
    assert read_sensitive(f"{run}:2") == [rows[0]["name"], rows[1]["name"]]


def test_json_with_out_method_and_per(run, tmp_path):
    out = tmp_path / "elsewhere" / "fisher.csv"
    args = ["-m", "fisher", "--per", "module", "--batches", "1", "--bs", "8", "-o", out, "--json"]
    result = invoke("sensitivity", run, *args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["method"] == "fisher" and payload["per"] == "module" and payload["images"] == 8
    assert [row["rank"] for row in payload["rows"]] == list(range(1, len(payload["rows"]) + 1))
    assert payload["rows"][0]["norm_score"] == 1.0
    assert payload["files"]["csv"] == str(out) and out.is_file()
    assert (out.parent / "plots" / "fisher_top.png").is_file() and (out.parent / "plots" / "fisher_depth.png").is_file()
    assert not (run / "sensitivity.csv").exists()


def test_ablation_says_which_rows_it_scored(run):
    result = invoke("sensitivity", run, "--method", "ablation", "--batches", "1", "--bs", "8", "--top", "3", "-q")
    assert result.exit_code == 0, result.output
    assert "ablation scored the 3 leaders of grad-norm" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--method", "gradnorm"], [*METHODS, "'gradnorm'", "grad-norm?"]),
        (["--per", "layer"], ["'layer'", "tensor, module, group"]),
        (["--top", "0"], ["--top", "at least 1"]),
        (["--split", "test2"], ["'test2'"]),
    ],
)
def test_bad_options_are_one_line_errors(run, args, words):
    result = runner.invoke(app, ["sensitivity", str(run), *args])
    assert result.exit_code == 1, result.output
    assert all(word in result.stderr for word in words), result.stderr
    assert "Traceback" not in result.output


def test_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["sensitivity", str(tmp_path)])
    assert result.exit_code == 1 and "not a fastcls run folder" in result.stderr
