"""`fastcls sweep` and `fastcls scaling` on the command line: shared studies, tables, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fastcls.cli.app import app

runner = CliRunner()
TINY = ("--blocks", "2", "--filters", "8", "--bs", "16", "--epochs", "1")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[params]\nlr = { type = "float", low = 2e-3, high = 2e-2, log = true }\n')
    return path


def test_help_does_not_import_optuna_or_torch():
    code = (
        "import sys\nfrom fastcls.cli.app import app\ntry:\n    app(['sweep', '--help'], prog_name='fastcls')\n"
        "except SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'optuna', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--space" in out and out.strip().endswith("[]")


def test_two_processes_share_one_sqlite_study(tmp_path, space, class_folders):
    """Two workers started at once on one storage and study: each runs its trial, both land in the study.

    One prints JSON and one the table, so both outputs are checked on the same study."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    out = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "fastcls",
        "sweep",
        str(class_folders),
        "--space",
        str(space),
        "--trials",
        "1",
        "--storage",
        storage,
        "--study",
        "shared",
        "--out",
        str(out),
        "--pruner",
        "none",
        "--quiet",
        *TINY,
    ]
    env = os.environ | {"COLUMNS": "200"}
    workers = [subprocess.Popen(command + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for extra in (["--json"], [])]  # fmt: skip
    results = [worker.communicate(timeout=300) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in results]
    summary, table = json.loads(results[0][0]), results[1][0]
    assert summary["ran"] == 1 and "this call ran 1" in table

    study = optuna.load_study(study_name="shared", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1] and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # one trial from each process
    assert {t.user_attrs["run"] for t in study.trials} == {str(out / "trials" / f"trial-000{i}") for i in (0, 1)}
    assert not (out / "sweep.db").exists()  # --storage was used, not the default file
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 2 and set(rows[0]) >= {"number", "state", "accuracy", "lr", "run", "worker"}
    assert "best trials by accuracy" in table and "importance needs at least 4" in table
    assert f"fastcls run {out / 'best.toml'}" in table.replace("\n", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--sampler", "bayes"), "sampler 'bayes' is not one of tpe, random, grid"),
        (("--pruner", "hyperband"), "pruner 'hyperband' is not one of median, none"),
        (("--lr", "0.01"), "lr is both swept"),
        (("--sampler", "grid"), "give it a step"),
    ],
)
def test_sweep_errors_are_one_line_and_exit_1(tmp_path, space, args, message):
    result = invoke("sweep", "builtin:digits", "--space", space, "--out", tmp_path / "s", *args)
    assert result.exit_code == 1 and message in result.stderr and result.stderr.startswith("error:")
    assert "Traceback" not in result.output


def test_scaling_prints_the_table_and_refuses_pretrained_cnn(tmp_path, class_folders):
    result = invoke("scaling", class_folders, "--arch", "cnn", "--fractions", "1/2", "--out", tmp_path / "s", *TINY)
    assert result.exit_code == 0, result.output
    assert "train acc" in result.stdout and "1/2" in result.stdout and "32" in result.stdout
    refused = invoke("scaling", class_folders, "--arch", "cnn", "--weights", "none,pretrained", "--out", tmp_path)
    assert refused.exit_code == 1 and "'cnn' has no pretrained weights" in refused.stderr
