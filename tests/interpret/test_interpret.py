"""`interpret` end to end on a trained digits run: every plot, the numbers behind them, report.md."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import fastcls
from fastcls.errors import ConfigError
from fastcls.interpret import PLOTS, interpret, select_plots
from fastcls.interpret.section import BEGIN, END


@pytest.fixture(scope="module")
def interpreted(trained_run, tmp_path_factory):
    """All plots on the valid split of a copy of the run, with two embedding snapshots present."""
    from fastcls.data.loaders import Batches, decode_split
    from fastcls.train.snapshots import EmbeddingSnapshots

    run = tmp_path_factory.mktemp("interpret") / "run"
    shutil.copytree(trained_run, run)
    clf = fastcls.load(run)
    _, _, samples = clf._split_samples(None, "valid")
    valid = Batches(decode_split(samples, clf.classes, clf.preprocessing), clf.preprocessing, 64)
    snapshots = EmbeddingSnapshots(every=1, folder=run, batches=valid, limit=100)
    snapshots.learn = type("FakeLearner", (), {"model": clf.model})()
    snapshots.after_epoch()
    snapshots.after_epoch()
    return run, interpret(run, split="valid", units=4, images=4)


@pytest.mark.parametrize("name", list(PLOTS))
def test_every_plot_writes_its_files_as_valid_pngs(interpreted, check_png, name):
    run, result = interpreted
    paths = result.files[name]
    assert paths and {p.name for p in paths} <= set(PLOTS[name].files)
    assert all(p.parent == run / "plots" and p.is_file() for p in paths)
    assert name in paths[0].name or name.split("_")[0] in paths[0].name  # the key word tools look for
    for path in paths:
        if path.suffix == ".png":
            check_png(path)


def test_epoch_panels_come_from_the_snapshots(interpreted, check_png):
    run, result = interpreted
    for method in ("pca", "tsne"):
        assert run / "plots" / f"{method}_epochs.png" in result.files[method]
        width, height = check_png(run / "plots" / f"{method}_epochs.png")
        assert width > height  # two panels side by side


def _valid_truth(run: Path):
    """Labels and an independent forward pass over the valid split: probabilities and the input
    to the classifier layer (head.out of the cnn), captured with a hook."""
    from fastcls.data.loaders import Batches, decode_split

    clf = fastcls.load(run)
    _, _, samples = clf._split_samples(None, "valid")
    decoded = decode_split(samples, clf.classes, clf.preprocessing)
    x = Batches(decoded, clf.preprocessing, 1024).normalise(decoded.images)
    captured = []
    handle = clf.model.head.out.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    with torch.no_grad():
        logits = clf.model.eval()(x)
    handle.remove()
    return decoded.labels.numpy(), logits.argmax(1).numpy(), captured[0].numpy().astype(np.float64), clf.classes


def test_confusion_matches_sklearn_and_sums_to_the_split(interpreted):
    from sklearn.metrics import confusion_matrix

    run, result = interpreted
    labels, predicted, _, classes = _valid_truth(run)
    with (run / "plots" / "confusion.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == classes and [r[0] for r in rows[1:]] == classes
    matrix = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert matrix.sum() == len(labels) == result.n == 179
    np.testing.assert_array_equal(matrix, confusion_matrix(labels, predicted, labels=range(len(classes))))
    assert result.accuracy == pytest.approx(np.trace(matrix) / matrix.sum())


def test_pca_coordinates_match_a_direct_svd(interpreted):
    run, _ = interpreted
    labels, _, features, classes = _valid_truth(run)
    with (run / "plots" / "pca.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    ours = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    assert [classes.index(r["true"]) for r in rows] == labels.tolist()
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    direct = centred @ vt[:2].T
    for k in range(2):
        sign = np.sign(ours[:, k] @ direct[:, k])
        np.testing.assert_allclose(sign * ours[:, k], direct[:, k], atol=1e-3 * np.abs(direct[:, k]).max())


def test_report_has_one_section_after_two_runs(interpreted, trained_run):
    run, _ = interpreted
    second = interpret(run, split="valid", only="confusion_pairs")
    assert list(second.files) == ["confusion_pairs"]
    text = (run / "report.md").read_text()
    assert text.count(BEGIN) == text.count(END) == text.count("## Interpretation") == 1
    assert "Repeat this run" in text  # training's report is kept
    assert "![Grad-CAM and Grad-CAM++: cam.png](plots/cam.png)" in text  # files of the first run stay indexed
    assert "### Classification report" in text and "| **macro avg** |" in text
    assert (run / "model.safetensors").read_bytes() == (trained_run / "model.safetensors").read_bytes()


def test_unknown_plot_name_lists_the_choices():
    with pytest.raises(ConfigError) as error:
        select_plots("confusion,cams")
    message = str(error.value)
    assert "'cams'" in message and ", ".join(PLOTS) in message and "Did you mean: cam" in message
    assert select_plots(["tsne", "cam"]) == ["tsne", "cam"]  # registry order


def test_bad_layer_and_counts_are_user_errors(run_copy):
    with pytest.raises(ConfigError, match=r"features\.block3\.conv"):
        interpret(run_copy, only="cam", layer="features.block9")
    with pytest.raises(ConfigError, match="not a spatial map"):
        interpret(run_copy, only="cam", layer="head.fc")
    with pytest.raises(ConfigError, match="--units 0"):
        interpret(run_copy, only="guided", units=0)
    assert not (run_copy / "plots" / "cam.png").exists()


def test_model_is_unchanged_by_what_the_plots_compute(run_copy):
    """cam, guided, filters and the features switch modes and flags and add hooks; all are undone."""
    from fastcls.interpret.cam import class_activation_maps
    from fastcls.interpret.context import Options, load_context
    from fastcls.interpret.filters import first_layer_maps
    from fastcls.interpret.guided import guided_gradients, unit_activations

    ctx = load_context(run_copy, None, "valid", Options(), None)
    model = ctx.model.train()
    model.head.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = ctx.normalised(range(4))
    for method in ("Grad-CAM", "Grad-CAM++"):
        class_activation_maps(model, ctx.layer_name, x, [0, 1, 2, 3], method)
    unit_activations(model, ctx.layer_name, x)
    guided_gradients(model, ctx.layer_name, x, [0, 1, 2, 3])
    first_layer_maps(model, x)
    assert ctx.features.shape == (ctx.n, 256)
    assert model.training and all(m.training for m in model.modules())
    assert not model.head.fc.weight.requires_grad and all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


def test_a_plot_without_input_is_skipped_with_the_reason(run_copy):
    (run_copy / "metrics.csv").unlink()
    result = interpret(run_copy, split="valid", only="curves,confusion_pairs")
    assert list(result.files) == ["confusion_pairs"] and "metrics.csv" in result.skipped["curves"]
    assert "## Interpretation" in (run_copy / "report.md").read_text()
