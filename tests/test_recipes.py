"""Recipes: the shipped files load, mistakes are caught before training, and a smoke recipe runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastcls.cli.app import app
from fastcls.config import Config
from fastcls.studies.recipes import STEPS, RecipeError, StepRecord, load_recipe, parse_override
from fastcls.studies.recipes.running import _substitute

TASKS = sorted((Path(__file__).parents[1] / "tasks").glob("*.toml"))
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_the_shipped_recipes_are_there():
    names = {p.stem for p in TASKS}
    assert {"scaling", "scratch-cnn-sweep", "scratch-vs-pretrained", "vote-three"} <= names


@pytest.mark.parametrize("path", TASKS, ids=[p.stem for p in TASKS])
@pytest.mark.parametrize("smoke", [False, True])
def test_every_shipped_recipe_loads_with_and_without_smoke(path, smoke):
    recipe = load_recipe(path, smoke=smoke)
    assert recipe.name == path.stem and recipe.description and recipe.steps and recipe.smoke
    assert recipe.report.get("title"), "report.md states the result under a title"


@pytest.mark.parametrize("command", STEPS)
def test_every_step_command_checks_its_settings(tmp_path, command):
    kind = STEPS[command]
    assert kind.keys and kind.help
    path = _write(tmp_path, f'[[steps]]\ncommand = "{command}"\nbogus_setting = 1\n')
    with pytest.raises(RecipeError, match=f"step '{command}' \\({command}\\) does not take bogus_setting"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[steps]]\ncommand = "trian"\n', "Did you mean: train"),
        ('[[steps]]\ncommand = "train"\n[[steps]]\ncommand = "train"\n', "give each an id"),
        ('[[steps]]\nid = "e"\ncommand = "evaluate"\nrun = "${t}"\n[[steps]]\nid = "t"\ncommand = "train"\n',
         r"refers to \$\{t\} \(it runs later\)"),
        ('[settings]\nepochz = 1\n[[steps]]\ncommand = "train"\n', "'epochz' is taken by no step"),
        ('[recipe]\nname = "x"\n', "no steps"),
        ('[steps]\ncommand = "train"\n', "no steps"),
        ('[extra]\n[[steps]]\ncommand = "train"\n', "unknown table 'extra'"),
        ('[[steps]]\ncommand = "train"\n[report]\nsteps = ["nope"]\n', "'nope', which is not a step"),
    ],
)  # fmt: skip
def test_recipe_mistakes_are_found_before_anything_runs(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_write(tmp_path, text))


def test_overrides_reach_settings_and_steps(tmp_path):
    text = (
        '[settings]\nepochs = 5\n[[steps]]\nid = "a"\ncommand = "train"\nepochs = 3\n'
        '[[steps]]\nid = "b"\ncommand = "train"\n'
    )
    recipe = load_recipe(_write(tmp_path, text), ["epochs=1", "b.size=16", 'b.arch="cnn"'])
    assert recipe.settings["epochs"] == 1 and recipe.step("a").settings["epochs"] == 1
    assert recipe.step("b").settings == {"size": 16, "arch": "cnn"}
    with pytest.raises(RecipeError, match="no step of this recipe takes 'trials'"):
        load_recipe(_write(tmp_path, text), ["trials=3"])
    with pytest.raises(RecipeError, match="has no \\[smoke\\] table"):
        load_recipe(_write(tmp_path, text), smoke=True)
    assert parse_override("fractions=['1/8', '1']") == ("fractions", ["1/8", "1"])
    assert parse_override("data=builtin:digits") == ("data", "builtin:digits")
    assert parse_override("lr=3e-3") == ("lr", 0.003)


def test_references_keep_types_or_interpolate():
    records = {"a": StepRecord("a", "train", "a", {}, {"path": "runs/a", "accuracy": 0.9}, [], 1.0)}
    assert _substitute({"run": "${a}", "x": ["${a.accuracy}", "at ${a}/plots"]}, records, "b") == {
        "run": "runs/a",
        "x": [0.9, "at runs/a/plots"],
    }
    with pytest.raises(RecipeError, match=r"\$\{a\.csv\} is not an output of step 'a'; it has path, accuracy"):
        _substitute("${a.csv}", records, "b")


def test_vote_three_smoke_runs_writes_one_table_and_reuses_steps(tmp_path):
    """The CI-sized version of a shipped recipe: three members trained, then their hard vote."""
    out = tmp_path / "vote"
    recipe = Path(__file__).parents[1] / "tasks" / "vote-three.toml"
    result = invoke("run", recipe, "--smoke", "--out", out, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [row["member"] for row in summary["table"]] == ["small", "big", "wide", "hard vote"]
    assert [row.get("preferred") for row in summary["table"]][:3] == ["", "yes", ""]
    assert summary["columns"][:2] == ["member", "size"]  # one step's rows: no step column
    for step in ("small", "big", "wide"):
        assert (out / step / "model.safetensors").is_file()
    report = (out / "report.md").read_text()
    assert "| hard vote |" in report and report.count("\n| ") >= 5 and "--smoke" in report

    again = json.loads(invoke("run", recipe, "--smoke", "--out", out, "--quiet", "--json").stdout)
    assert [s["reused"] for s in again["steps"]] == [True] * 4 and again["table"] == summary["table"]
    soft = json.loads(
        invoke("run", recipe, "--smoke", "--out", out, "--set", "vote.method=soft", "-q", "--json").stdout
    )
    assert [s["reused"] for s in soft["steps"]] == [True, True, True, False]
    assert soft["table"][-1]["member"] == "soft vote"


def test_run_a_config_file_with_overrides_and_refuse_smoke(tmp_path, class_folders):
    config = tmp_path / "config.toml"
    config.write_text(
        Config().merged({"data": {"source": str(class_folders)}, "model": {"cnn": {"blocks": 2}}}).to_toml()
    )
    result = invoke("run", config, "--set", "epochs=1", "--set", "filters=4", "--out", tmp_path / "r", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 1
    refused = invoke("run", config, "--smoke")
    assert refused.exit_code == 1 and "--smoke is for recipes" in refused.stderr
