"""model.json through its one reader and writer: a run's card reads back whole, cards of earlier
versions still load, and anything else is refused with the file's name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import fastcls
from fastcls.errors import RunError
from fastcls.model_card import MODEL_FORMAT, ModelCard
from fastcls.runs import list_runs


def test_a_runs_card_reads_back_whole(trained_run: Path) -> None:
    raw = json.loads((trained_run / "model.json").read_text())
    card = ModelCard.read(trained_run)
    assert raw["format"] == MODEL_FORMAT == "fastcls.model/2" and raw["classifier"] is True
    assert card.to_dict() == raw  # every key, the training record in `extra` too
    assert card.num_classes == raw["num_classes"] == len(card.classes) > 1
    assert card.get("strategy") == raw["strategy"] == card["strategy"] and card.get("nothing", 7) == 7
    assert card["epochs"] == raw["epochs"] and card["num_classes"] == raw["num_classes"]


def test_a_version_1_card_still_loads_and_predicts_the_same(trained_run: Path, tmp_path: Path) -> None:
    old = tmp_path / "old-run"
    shutil.copytree(trained_run, old)
    raw = json.loads((old / "model.json").read_text())
    raw["format"] = "fastcls.model/1"
    del raw["classifier"]  # version 1 cards had no such key
    (old / "model.json").write_text(json.dumps(raw))
    card = ModelCard.read(old)
    assert card.classifier is True and card.format == "fastcls.model/1"
    images = [sample.path for sample in fastcls.resolve_source("builtin:digits").split("test")[:6]]
    before = [p.label for p in fastcls.load(trained_run).predict(images)]
    assert [p.label for p in fastcls.load(old).predict(images)] == before
    assert [info.path for info in list_runs(tmp_path)] == [old]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "is damaged or from another tool"),
        ("[1, 2]", "not a JSON object"),
        ('{"format": "keras.model/9", "arch": "cnn"}', "format 'keras.model/9', not one this fastcls reads"),
        ('{"format": "fastcls.model/2", "arch": "cnn", "family": "cnn"}', "is damaged or from another tool"),
        (
            '{"format": "fastcls.model/2", "arch": "cnn", "family": "cnn", "preprocessing": {"size": 8}}',
            "a classifier's card lists its classes",
        ),
    ],
)
def test_anything_else_is_refused_naming_the_file(tmp_path: Path, content: str, words: str) -> None:
    (tmp_path / "model.json").write_text(content)
    with pytest.raises(RunError, match=r"model\.json") as info:
        ModelCard.read(tmp_path)
    assert words in str(info.value)
    assert tmp_path not in [info.path for info in list_runs(tmp_path.parent)]  # not listed as a run


def test_a_backbone_card_is_not_a_classifier(tmp_path: Path) -> None:
    card = ModelCard(
        "cnn",
        "cnn",
        {"size": 16},
        format="fastcls.backbone/1",
        classifier=False,
        extra={"method": "byol"},
    )
    card.write(tmp_path)
    read = ModelCard.read(tmp_path)
    assert read == card and json.loads((tmp_path / "model.json").read_text())["num_classes"] == 0
    with pytest.raises(RunError, match=r"byol backbone without a classifier.*fastcls finetune DATA --arch cnn"):
        read.require_classifier(tmp_path)
    assert ModelCard.find(tmp_path / "missing") is None and ModelCard.find(None) is None
