"""The Python API end to end on real image files: train, evaluate, save, load, predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import fastcls
from fastcls.errors import DataError
from tests_support import write_class_folders


def test_cnn_on_builtin_digits_reaches_the_floor():
    clf = fastcls.ImageClassifier("cnn", size=16, epochs=8).fit("builtin:digits", quiet=True)
    result = clf.evaluate()
    assert result.split == "test" and result.n == 359
    assert result.accuracy >= 0.97, result.accuracy
    assert len(clf.history) == 8 and clf.history[-1]["accuracy"] >= 0.95


def test_builtin_digits_recipe_fills_only_the_settings_left_unset(class_folders):
    from fastcls.build import with_suggestions

    clf = fastcls.ImageClassifier("cnn", epochs=1, filters=8).fit("builtin:digits", quiet=True)
    assert clf.suggested == {"size": 16, "blocks": 3, "aug": "light", "label_smoothing": 0.1, "wd": 0.05}
    assert len(clf.history) == 1 and clf.config.model.cnn.filters == 8 and clf.config.data.size == 16
    assert clf.config.model.cnn.blocks == 3 and clf.config.train.label_smoothing == 0.1
    # a config file's keys count as given; other data and other archs get nothing
    base = fastcls.Config().merged({"data": {"source": "builtin:digits"}})
    config, applied = with_suggestions(base, {"data": {"size": 8, "aug": "none"}}, {"train": {"epochs": 2}})
    assert applied == {"blocks": 3, "filters": 64, "label_smoothing": 0.1, "wd": 0.05} and config.model.cnn.blocks == 3
    # keys count one by one: a [data.aug] table that sets hflip alone still takes the recipe's preset
    assert with_suggestions(base, {"data": {"aug": {"hflip": 0.5}}})[1]["aug"] == "light"
    assert with_suggestions(base.merged({"data": {"source": str(class_folders)}}), {})[1] == {}
    assert with_suggestions(base.merged({"model": {"arch": "resnet18"}}), {})[1] == {}
    assert (
        with_suggestions(base.merged({"model": {"weights": "runs/digits-cnn", "pretrained": True}}), {})[1] == {}
    )  # its own shape
    resolved = fastcls.ImageClassifier.from_config(base)  # a resolved config (a run's config.toml) is kept as is
    assert resolved._resolve(None, {}).model.cnn.blocks == base.model.cnn.blocks


def test_fixed_seed_repeats_exactly_and_another_seed_does_not(class_folders):
    def weights(seed):
        clf = fastcls.ImageClassifier("cnn", blocks=2, epochs=2, seed=seed).fit(class_folders, quiet=True)
        return clf.model.state_dict()

    first, second, other = weights(3), weights(3), weights(4)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_save_load_gives_identical_predictions(tmp_path, split_folders):
    clf = fastcls.ImageClassifier("cnn", blocks=2, epochs=2).fit(split_folders, quiet=True)
    path = clf.save(tmp_path / "run")
    loaded = fastcls.load(path)
    images = sorted((split_folders / "test").rglob("*.png"))
    before, paths_before = clf.predict_proba(images)
    after, paths_after = loaded.predict_proba(images)
    assert paths_before == paths_after and np.array_equal(before, after)
    assert loaded.classes == clf.classes == ["0", "1", "2"]
    assert loaded.evaluate().accuracy == clf.evaluate().accuracy
    top = loaded.predict(images[:1], top=2)[0]
    assert top.label == top.top[0][0] and len(top.top) == 2 and top.probability >= top.top[1][1]


def test_evaluate_agrees_with_scikit_learn(trained_run):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score

    clf = fastcls.load(trained_run)
    result = clf.evaluate(split="test")
    samples = fastcls.resolve_source("builtin:digits").split("test")
    probs, _ = clf.predict_proba([s.path for s in samples])
    truth = [clf.classes.index(s.label) for s in samples]
    predicted = probs.argmax(1)
    assert result.accuracy == pytest.approx(accuracy_score(truth, predicted))
    assert result.confusion == confusion_matrix(truth, predicted).tolist()
    assert sum(map(sum, result.confusion)) == result.n == 359
    precision = precision_score(truth, predicted, average=None, zero_division=0)
    assert [c["precision"] for c in result.per_class.values()] == pytest.approx(precision.tolist())
    macro = np.mean([c["f1"] for c in result.per_class.values()])
    assert macro == pytest.approx(f1_score(truth, predicted, average="macro"))


def test_run_folder_is_complete_and_reloadable(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.toml", "metrics.csv", "model.safetensors", "model.json", "report.md", "plots"} <= names
    card = json.loads((trained_run / "model.json").read_text())
    assert card["arch"] == "cnn" and card["classes"] == [str(i) for i in range(10)]
    assert card["model_settings"]["blocks"] == 3 and card["preprocessing"]["size"] == 8
    assert 0.8 < card["metrics"]["test_accuracy"] <= 1 and card["versions"]["torch"]
    rows = fastcls.load(trained_run).history
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and rows[-1]["valid_loss"] < rows[0]["valid_loss"]
    with Image.open(trained_run / "plots" / "curves.png") as plot:
        assert plot.size[0] >= 600 and len(np.unique(np.asarray(plot.convert("L")))) > 10  # not blank
    assert "test accuracy" in (trained_run / "report.md").read_text()


def odd_image_folder(root):
    """Digits plus one file of each awkward kind, and one truncated file."""
    write_class_folders(root, per_class=12, classes=2)
    odd = root / "0"
    Image.new("CMYK", (16, 16), (0, 0, 0, 255)).save(odd / "cmyk.jpg")
    Image.fromarray(np.full((16, 16), 30000, dtype=np.uint16)).save(odd / "deep.png")
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.save(odd / "palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (20, 16)).save(odd / "rotated.jpg", exif=exif.tobytes())
    data = (root / "1" / "0012.png").read_bytes()
    (root / "1" / "truncated.png").write_bytes(data[: len(data) // 2])
    return root


def test_odd_images_train_and_a_broken_one_is_skipped_and_counted(tmp_path):
    data = odd_image_folder(tmp_path / "odd")
    clf = fastcls.ImageClassifier("cnn", blocks=2, epochs=1, size=16).fit(data, quiet=True)
    assert clf.metrics["skipped_images"] == 1
    with pytest.raises(DataError, match="1 unreadable image"):
        fastcls.ImageClassifier("cnn", epochs=1, on_bad_image="error").fit(data, quiet=True)


@pytest.mark.parametrize("arch", ["mobilenetv3_small_050", "tv:squeezenet1_1"])
def test_timm_and_torchvision_models_train_and_reload(tmp_path, class_folders, arch):
    clf = fastcls.ImageClassifier(arch, size=32, epochs=1, bs=16).fit(class_folders, quiet=True)
    loaded = fastcls.load(clf.save(tmp_path / "run"))
    images = sorted(class_folders.rglob("*.png"))[:8]
    assert np.array_equal(clf.predict_proba(images)[0], loaded.predict_proba(images)[0])
    assert loaded.preprocessing.resize == "crop" and loaded.preprocessing.size == 32


def test_untrained_classifier_says_so():
    with pytest.raises(fastcls.FastclsError, match="not been trained"):
        fastcls.ImageClassifier("cnn").predict(["x.png"])
