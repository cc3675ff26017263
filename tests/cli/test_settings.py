"""Settings declared once: every command that trains gets its options from the marked declarations,
each option is a real setting, and every config field can be set from each of those commands."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import fastcls
from fastcls.cli.app import app
from fastcls.cli.settings import SETTINGS, TAKES, flag, pick, settings_of
from fastcls.config import AugConfig, CnnConfig, Config, DataConfig, ModelConfig, RunConfig, TrainConfig

# Fields no command sets by a flag of their own name, and how each is set instead (a --config file sets
# every field; these are the ones a flag does not).
SET_OTHERWISE = {
    "source": "the DATA argument",
    "lr_find": "--lr auto",
    "pretrained": "the command (finetune; sweep's --pretrained/--scratch; scaling's --weights)",
    "head_dropout": "--dropout, for archs other than cnn",
    "cnn": "its fields' own flags (--blocks, ...)",
    "preset": "--aug",
    "root": "--runs-dir",
    "crop_ratio": "a config file's [data.aug] table",
    "magnitude": "a config file's [data.aug] table",
    "hue": "a config file's [data.aug] table",
    "blur_sigma": "a config file's [data.aug] table",
}
# What a command leaves out on purpose (see TAKES): `train` trains every layer from random weights, so
# no fine-tuning settings; the studies own their folder, their grid, and run outside torchrun.
LEFT_OUT = {
    "train": {s.name for s in SETTINGS.values() if s.group == "finetune"},
    "sweep": {"name", "out", "exist_ok", "global_bs", "sync_bn"},
    "scaling": {"name", "out", "exist_ok", "global_bs", "sync_bn", "arch", "weights", "fraction"},
}


def _options(command: str) -> set[str]:
    group = typer.main.get_command(app)
    cli = group.get_command(group.context_class(group), command)
    return {name.split("/")[0] for p in cli.params for name in p.opts + p.secondary_opts}


@pytest.mark.parametrize("command", TAKES)
def test_a_command_lists_the_options_of_its_settings(command: str) -> None:
    options = _options(command)
    assert {flag(name) for name in settings_of(command)} <= options
    assert {"--config", "--quiet", "--json"} <= options


@pytest.mark.parametrize("command", TAKES)
def test_every_config_field_is_reachable_from_each_command_that_trains(command: str) -> None:
    taken = set(settings_of(command))
    every = [
        f.name for kind in (DataConfig, ModelConfig, TrainConfig, AugConfig, CnnConfig, RunConfig) for f in fields(kind)
    ]
    unreachable = sorted(
        name
        for name in every
        if name not in taken and name not in SET_OTHERWISE and name not in LEFT_OUT.get(command, set())
    )
    assert unreachable == []
    assert not (LEFT_OUT.get(command, set()) & taken)  # and what is left out on purpose is not there either


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_option_lands_in_a_config_setting(name: str) -> None:
    """No option is parsed and then ignored: each becomes a setting that Config places."""
    value = "auto" if name == "lr" else "x"
    nested = Config.nest(pick({name: value}, (name,)))
    assert nested  # placed in a section (Config.nest refuses a name it does not know)


def test_flags_come_from_the_declarations() -> None:
    assert flag("arch") == "--arch" and flag("crop_scale") == "--crop-scale" and flag("freeze_bn") == "--freeze-bn"
    assert flag("cache_features") == "--cache-features" and flag("not_a_setting") == "--not-a-setting"
    assert flag("root") == "--runs-dir" and flag("preset") == "--aug"  # a field's flag, by its field name too
    assert settings_of("train")[0] == "arch" and "weights" not in settings_of("train")


def test_a_config_field_declared_with_setting_is_the_option() -> None:
    """The field is the one declaration: its flag, help and group are what every command that trains
    shows, and its type is what the option parses."""
    declared = {
        f.name: f.metadata["flag"]
        for kind in (DataConfig, ModelConfig, TrainConfig, AugConfig, CnnConfig, RunConfig)
        for f in fields(kind)
        if "flag" in f.metadata
    }
    assert len(declared) == len(SETTINGS) - 1  # every option but the legacy --freeze-bn/--train-bn is a field
    for field_name, meta in declared.items():
        option = SETTINGS[meta.name or field_name]
        assert option.group == meta.group and meta.help
        assert option.annotation.__metadata__[0].help == meta.help
    group = typer.main.get_command(app)
    train = group.get_command(group.context_class(group), "train")
    blocks = next(p for p in train.params if p.name == "blocks")
    assert blocks.help == CnnConfig.__dataclass_fields__["blocks"].metadata["flag"].help
    refused = CliRunner().invoke(app, ["train", "builtin:digits", "--blocks", "three"])
    assert refused.exit_code == 2 and "Invalid value for '--blocks'" in refused.output  # parsed as an int


# Flags of other programs that fastcls's messages quote (torchrun, accelerate).
FOREIGN_FLAGS = {"--nproc-per-node", "--cpu", "--num_processes"}
HELP = {"--help"}  # Click adds it to every command when help is shown
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*")


def _all_options(command) -> set[str]:
    found = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for sub in getattr(command, "commands", {}).values():
        found |= _all_options(sub)
    return found


def test_every_flag_the_library_names_is_an_option_of_some_command():
    """Library messages name flags as text (the library sits below the CLI); this keeps that text true:
    renaming or dropping an option fails here until every message that names it follows."""
    known = _all_options(typer.main.get_command(app)) | FOREIGN_FLAGS | HELP
    stale = []
    for path in sorted(Path(fastcls.__file__).parent.rglob("*.py")):
        if "cli" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                stale += [f"{path.name}:{node.lineno} {f}" for f in FLAG.findall(node.value) if f not in known]
    assert not stale, stale
