"""Confusion plots stay legible with 100 classes, and their numbers come from the right cells."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from fastcls.interpret.confusion import (
    TOP_K,
    classification_report_plot,
    classification_rows,
    confused_pairs,
    confusion_pairs_plot,
    confusion_plot,
    most_confused_classes,
)
from fastcls.interpret.context import Context, Options


@pytest.fixture
def hundred_classes(tmp_path) -> Context:
    """A scored split without a model: 100 classes x 10 images, two planted confusions and noise."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(100), 10)
    predicted = labels.copy()
    predicted[70:75] = 8  # class 7 -> 8, five times
    predicted[420:424] = 24  # class 42 -> 24, four times
    noise = rng.choice(np.flatnonzero((predicted == labels) & (labels != 7) & (labels != 42)), 30, replace=False)
    predicted[noise] = (labels[noise] + rng.integers(1, 100, 30)) % 100
    ctx = Context.__new__(Context)
    ctx.run, ctx.plots, ctx.split, ctx.options = tmp_path, tmp_path / "plots", "test", Options()
    ctx.classes = [f"species_{i:02d}" for i in range(100)]
    ctx.labels, ctx.predicted = labels, predicted
    return ctx


def test_hundred_classes_get_a_top_k_matrix_and_a_full_one(hundred_classes, check_png):
    ctx = hundred_classes
    written = {p.name for p in confusion_plot(ctx)}
    assert written == {"confusion.png", "confusion_full.png", "confusion.csv"}
    keep = most_confused_classes(ctx.confusion)
    assert len(keep) == TOP_K and {7, 8, 42, 24} <= set(keep)
    width, height = check_png(ctx.plots / "confusion.png")
    assert width < 3000 and height < 1500  # 15x15 cells, not 100x100
    check_png(ctx.plots / "confusion_full.png")
    with (ctx.plots / "confusion.csv").open() as handle:
        matrix = np.array([[int(v) for v in row[1:]] for row in list(csv.reader(handle))[1:]])
    assert matrix.shape == (100, 100) and matrix.sum() == 1000 and matrix[7, 8] == 5 and matrix[42, 24] == 4


def test_pairs_and_report_rows(hundred_classes, check_png):
    ctx = hundred_classes
    pairs = confused_pairs(ctx)
    assert pairs[0] == {"true": "species_07", "predicted": "species_08", "count": 5, "share": 0.5}
    assert pairs[1]["count"] == 4 and len(pairs) == 10
    rows = classification_rows(ctx)
    assert len(rows) == 102 and rows[7]["recall"] == pytest.approx(0.5) and rows[-1]["class"] == "weighted avg"
    for draw in (classification_report_plot, confusion_pairs_plot):
        for path in draw(ctx):
            if path.suffix == ".png":
                check_png(path)
    with (ctx.plots / "classification_report.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 102
