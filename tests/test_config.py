"""Config: defaults, TOML round trip, flat settings, and errors that name the fix."""

from __future__ import annotations

import pytest

from fastcls.config import Config, load_config, parse_fraction
from fastcls.errors import ConfigError


def test_toml_round_trip(tmp_path):
    config = Config().merged(Config.nest({"arch": "cnn", "blocks": 3, "epochs": 2, "fraction": "1/4"}))
    (tmp_path / "c.toml").write_text(config.to_toml())
    again = load_config(tmp_path / "c.toml")
    assert again == config and again.model.cnn.blocks == 3 and again.data.fraction == 0.25


def test_cnn_section_only_for_cnn():
    assert "cnn" not in Config().merged({"model": {"arch": "resnet18"}}).to_dict()["model"]


@pytest.mark.parametrize(("value", "expected"), [("1/16", 0.0625), ("0.5", 0.5), (1, 1.0)])
def test_fractions(value, expected):
    assert parse_fraction(value) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train": {"epoch": 3}}, "Did you mean: epochs"),
        ({"train": {"epochs": 0}}, "epochs=0 is out of range"),
        ({"data": {"fraction": "2"}}, r"must be in \(0, 1\]"),
        ({"data": {"on_bad_image": "ignore"}}, "not one of skip, error"),
        ({"model": {"cnn": {"kernel": 4}}}, "must be odd"),
        ({"train": {"lr": "fast"}}, "wrong type"),
        ({"run": {"name": "a/b"}}, "plain folder name"),
    ],
)
def test_bad_values_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config().merged(overrides)


def test_unknown_flat_setting_and_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean: blocks"):
        Config.nest({"block": 3})
    (tmp_path / "bad.toml").write_text("[train\nepochs = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
