"""Fine-tuning end to end: offline ImageNet weights beat scratch, and the saved model is plain timm."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import fastcls
from fastcls.cli.app import app

LOW_DATA = {"size": 64, "bs": 16, "fraction": "1/4", "lr": 1e-2, "seed": 0}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """EfficientNet-Lite0 from the packaged ImageNet weights, freeze 1 + 2 epochs on 1/4 of digits."""
    folder = tmp_path_factory.mktemp("ft") / "lite0"
    runner = CliRunner()
    args = ["finetune", "builtin:digits", "--arch", "efficientnet_lite0", "--freeze-epochs", "1", "--epochs", "2"]
    args += ["--size", "64", "--bs", "16", "--fraction", "1/4", "--lr", "1e-2", "--seed", "0", "--freeze-bn"]
    result = runner.invoke(app, [*args, "--out", str(folder), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


def test_finetuning_beats_scratch_with_the_same_budget(finetuned):
    _, summary = finetuned
    scratch = fastcls.ImageClassifier("efficientnet_lite0", epochs=3, **LOW_DATA).fit("builtin:digits", quiet=True)
    scratch_test = scratch.evaluate().accuracy
    assert summary["test_accuracy"] > 0.72, summary  # measured 0.79 (CPU, seed 0)
    assert summary["test_accuracy"] > scratch_test + 0.03, (summary["test_accuracy"], scratch_test)


def test_run_records_the_strategy_phases_and_weights(finetuned):
    folder, _ = finetuned
    card = json.loads((folder / "model.json").read_text())
    assert card["pretrained"] and card["strategy"] == "freeze-unfreeze"
    assert card["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and card["preprocessing"]["resize"] == "crop"
    rows = fastcls.load(folder).history
    assert [r["phase"] for r in rows] == ["frozen", "unfrozen", "unfrozen"]
    frozen = [float(x) for x in rows[0]["group_lrs"].split(";")]
    assert all(x == 0 for x in frozen[:-1]) and frozen[-1] > 0
    config = fastcls.load_config(folder / "config.toml")
    assert config.command == "finetune" and config.train.freeze_bn and config.model.arch == "tf_efficientnet_lite0.in1k"


def test_saved_weights_load_into_plain_timm_with_identical_logits(finetuned):
    import timm
    from safetensors.torch import load_file

    folder, _ = finetuned
    clf = fastcls.load(folder)
    plain = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    plain.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), clf.model.eval()(x))


def test_lr_find_command_prints_suggestions_and_draws(tmp_path, class_folders):
    plot = tmp_path / "lr.png"
    result = CliRunner().invoke(
        app, ["lr-find", str(class_folders), "--arch", "cnn", "--blocks", "2", "--plot", str(plot), "--json"]
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["suggest"] == "valley" and found["lr"] == found["suggestions"]["valley"]
    assert plot.stat().st_size > 10_000


def test_finetune_errors_are_one_line(tmp_path, class_folders):
    runner = CliRunner()
    offline = runner.invoke(app, ["finetune", str(class_folders), "--arch", "resnet18", "--out", str(tmp_path / "r")])
    assert offline.exit_code == 1 and "--weights PATH" in offline.stderr and not (tmp_path / "r").exists()
    bad = runner.invoke(app, ["finetune", str(class_folders), "--arch", "efficientnet_lite0", "--strategy", "freez"])
    assert bad.exit_code == 1 and "Did you mean: freeze" in bad.stderr
    lr = runner.invoke(app, ["finetune", str(class_folders), "--lr", "fast"])
    assert lr.exit_code == 1 and "neither a number" in lr.stderr
