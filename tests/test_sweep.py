"""Sweeps: the space file, the registries, pruning, importance, outputs, and a real tiny study."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest

from fastcls.config import load_config
from fastcls.errors import ConfigError
from fastcls.studies.sweep import (
    METRICS,
    MIN_IMPORTANCE_TRIALS,
    PARAM_TYPES,
    PRUNERS,
    SAMPLERS,
    SweepError,
    importance,
    load_space,
    parse_space,
    sweep,
    sweep_outputs,
)
from fastcls.studies.sweep.study import _report_callback

TINY = {"arch": "cnn", "blocks": 2, "filters": 8, "epochs": 2, "bs": 16}


def _example(kind: str) -> dict:
    import tomllib

    return tomllib.loads(f"x = {PARAM_TYPES[kind].example}")["x"]


@pytest.mark.parametrize("kind", PARAM_TYPES)
def test_every_param_type_parses_its_example_and_suggests_inside_its_range(kind):
    import optuna

    name = {"float": "lr", "int": "blocks", "choice": "filters"}[kind]
    (param,) = parse_space({"params": {name: _example(kind)}})
    assert param.type == kind and parse_space({name: param.to_dict()}) == [param]  # round trip
    trial = optuna.create_study().ask()
    value = param.suggest(trial)
    if kind == "choice":
        assert value in param.values and param.grid() == list(param.values)
    else:
        assert param.low <= value <= param.high


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"lrr": {"type": "float", "low": 1e-3, "high": 1e-2}}, "Did you mean: lr"),
        ({"lr": {"type": "uniform", "low": 1, "high": 2}}, "not one of float, int, choice"),
        ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, "must be below high"),
        ({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log range needs low > 0"),
        ({"blocks": {"type": "int", "low": 2.5, "high": 4}}, "must be a whole number"),
        ({"filters": {"type": "choice", "values": []}}, "non-empty list"),
        ({"filters": {"type": "choice", "values": [8], "low": 1}}, "low is not a key of a choice entry"),
        ({"out": {"type": "choice", "values": ["a"]}}, "cannot be swept"),
        ({"lr": 0.01}, "must be a table with a type"),
        ({}, "the search space is empty"),
    ],
)
def test_bad_space_entries_name_the_entry_and_the_fix(entry, message):
    with pytest.raises(ConfigError, match=message):
        parse_space({"params": entry})


def test_space_file_and_grid_rules(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[params]\nblocks = { type = "int", low = 2, high = 6, step = 2 }\n')
    (blocks,) = load_space(path)
    assert blocks.grid() == [2, 4, 6]
    (lr,) = parse_space({"lr": {"type": "float", "low": 0.1, "high": 0.3}})
    with pytest.raises(ConfigError, match="give it a step"):
        lr.grid()
    (lr,) = parse_space({"lr": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1}})
    assert lr.grid() == [0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_builds_for_a_discrete_space(name):
    space = {"filters": {"type": "choice", "values": [8, 16]}, "blocks": {"type": "int", "low": 2, "high": 3}}
    params = parse_space(space)
    assert SAMPLERS[name](params, 0) is not None


@pytest.mark.parametrize("name", PRUNERS)
def test_every_pruner_builds(name):
    assert PRUNERS[name]() is not None


def _synthetic_study(values):
    """An in-memory study of complete trials with lr and filters, without training anything."""
    import optuna

    study = optuna.create_study(direction="maximize", study_name="synthetic")
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True),
        "filters": optuna.distributions.CategoricalDistribution([8, 16]),
    }
    for i, value in enumerate(values):
        params = {"lr": 10 ** (-3 + 2 * i / max(len(values) - 1, 1)), "filters": [8, 16][i % 2]}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    return study


def test_importance_needs_enough_trials_then_ranks_the_setting_that_matters():
    few = _synthetic_study([0.5] * (MIN_IMPORTANCE_TRIALS - 1))
    shares, note = importance(few, ["lr", "filters"])
    assert shares is None and f"at least {MIN_IMPORTANCE_TRIALS} complete trials" in note
    study = _synthetic_study([0.1, 0.3, 0.5, 0.7, 0.9, 0.95])  # the score follows lr, not filters
    shares, note = importance(study, ["lr", "filters"])
    assert list(shares) == ["lr", "filters"] and shares["lr"] > 0.8 and sum(shares.values()) == pytest.approx(1)
    assert "fANOVA over 6" in note


def test_outputs_of_a_study_without_run_folders(tmp_path):
    params = parse_space({"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
                          "filters": {"type": "choice", "values": [8, 16]}})  # fmt: skip
    result = sweep_outputs(_synthetic_study([0.2, 0.9, 0.4, 0.6]), params, "accuracy", tmp_path)
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete"] * 4 and rows[1]["accuracy"] == "0.9"
    assert result.best.number == 1 and result.best_config is None  # no run folder to take the config from
    for name in ("parallel.png", "trials.png", "importance.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "importance.csv").read_text().startswith("param,importance\n")


class _FakeTrial:
    def __init__(self, prune: bool) -> None:
        self.prune, self.reports = prune, []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.prune


@pytest.mark.parametrize(("prune", "epoch", "stops"), [(True, 1, True), (False, 1, False), (True, 3, False)])
def test_pruning_callback_reports_each_epoch_and_stops_through_the_trainer(prune, epoch, stops):
    from fastai.callback.core import CancelFitException

    history = [{"epoch": e, "accuracy": 0.1 * e} for e in range(1, epoch + 1)]
    trainer = SimpleNamespace(history=history, planned_epochs=3, stop=SimpleNamespace(reason=None))
    trial = _FakeTrial(prune)
    callback = _report_callback(trial, "accuracy", trainer)
    if stops:
        with pytest.raises(CancelFitException):
            callback.after_epoch()
    else:
        callback.after_epoch()  # the last planned epoch is the result: never pruned
    assert trial.reports == [(epoch, pytest.approx(0.1 * epoch))]
    assert trainer.stop.reason == ("pruned" if stops else None)
    callback.after_epoch()  # no new epoch (an LR-finder pass): nothing reported again
    assert len(trial.reports) == 1


def test_tiny_sweep_writes_runs_and_outputs_then_resumes(tmp_path, class_folders):
    space = {"lr": {"type": "float", "low": 2e-3, "high": 2e-2, "log": True},
             "filters": {"type": "choice", "values": [4, 8]}}  # fmt: skip
    settings = {k: v for k, v in TINY.items() if k != "filters"}
    out = tmp_path / "sweep"
    result = sweep(class_folders, space, 2, out=out, pruner="none", settings=settings, sampler_seed=0)
    assert result.ran == 2 and [t.state for t in result.trials] == ["complete", "complete"]
    for trial in result.trials:
        assert (out / "trials" / f"trial-{trial.number:04d}" / "model.safetensors").is_file() and trial.epochs == 2
    best = load_config(result.best_config)
    assert best.model.cnn.filters == result.best.params["filters"] and best.train.lr == result.best.params["lr"]
    assert best.run.name == "sweep-best" and best.data.source == str(class_folders)
    assert result.importance is None and "at least" in result.importance_note
    assert {"trials", "best", "trials_plot", "parallel_plot", "summary"} <= set(result.files)

    again = sweep(class_folders, space, 1, out=out, pruner="none", settings=settings)  # same study: continues
    assert again.ran == 1 and len(again.trials) == 3 and len(list((out / "trials").iterdir())) == 3
    with pytest.raises(SweepError, match=r"train\.epochs \(2 then, 1 now\)"):
        sweep(class_folders, space, 1, out=out, settings=settings | {"epochs": 1})
    with pytest.raises(ConfigError, match="both swept"):
        sweep(class_folders, space, 1, out=tmp_path / "other", settings=settings | {"lr": 0.01})
    with pytest.raises(ConfigError, match="metric 'acc' is not one of"):
        sweep(class_folders, space, 1, out=tmp_path / "other", metric="acc")
    assert set(METRICS) >= {"accuracy", "valid_loss"}


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("opt", ["adamw", "sgdd"], r"opt = 'sgdd' cannot run: opt 'sgdd' is not one of .*Did you mean: sgd\?"),
        ("strategy", ["full", "fulll"], r"strategy = 'fulll' cannot run: strategy 'fulll' is not one of"),
        ("aug", ["light", "strongg"], r"aug = 'strongg' cannot run: .*'strongg'"),
    ],
)
def test_an_unknown_choice_in_the_space_fails_before_any_trial(tmp_path, class_folders, name, values, message):
    out = tmp_path / "sweep"
    with pytest.raises(SweepError, match=message):
        sweep(class_folders, {name: {"type": "choice", "values": values}}, 2, out=out, settings=TINY)
    assert not (out / "trials").exists()  # no trial ran


def test_a_trial_failing_for_another_reason_is_counted_with_its_first_error(tmp_path, class_folders, monkeypatch):
    import json

    import fastcls.runner

    real = fastcls.runner.train_run

    def flaky(config, *args, **kwargs):
        if config.model.cnn.filters == 4:
            raise RuntimeError("CUDA out of memory (pretend)\nsecond line")
        return real(config, *args, **kwargs)

    monkeypatch.setattr(fastcls.runner, "train_run", flaky)
    space = {"filters": {"type": "choice", "values": [4, 8]}}
    settings = {k: v for k, v in TINY.items() if k != "filters"}
    result = sweep(class_folders, space, 2, out=tmp_path / "s", sampler="grid", pruner="none", settings=settings)
    assert result.counts() == {"fail": 1, "complete": 1}
    failed = next(t for t in result.trials if t.state == "fail")
    assert failed.params == {"filters": 4} and failed.note == "RuntimeError: CUDA out of memory (pretend)"
    summary = json.loads(result.files["summary"].read_text())
    assert [t["note"] for t in summary["trials"] if t["state"] == "fail"] == [failed.note]
