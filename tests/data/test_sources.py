"""DATA layouts resolve to the same labelled splits; bad layouts fail with messages that help."""

from __future__ import annotations

from collections import Counter

import pytest

from fastcls.data.sources import resolve_source
from fastcls.errors import DataError
from tests_support import write_csv


def test_class_folders_get_a_stratified_valid_split(class_folders):
    source = resolve_source(class_folders, valid_pct=0.25, seed=7)
    assert source.kind == "class-folders" and source.classes == ["0", "1", "2", "3"]
    valid = Counter(s.label for s in source.split("valid"))
    assert valid == {"0": 5, "1": 5, "2": 5, "3": 5}  # every class in the same proportion
    again = resolve_source(class_folders, valid_pct=0.25, seed=7)
    assert [s.path for s in again.split("valid")] == [s.path for s in source.split("valid")]
    other = resolve_source(class_folders, valid_pct=0.25, seed=8)
    assert [s.path for s in other.split("valid")] != [s.path for s in source.split("valid")]


def test_split_folders_accept_val_and_test(split_folders):
    source = resolve_source(split_folders)
    assert source.kind == "split-folders"
    assert source.splits == ["train", "valid", "test"]
    assert {k: sum(v.values()) for k, v in source.counts().items()} == {
        "train": 60,
        "valid": 15,
        "test": 15,
    }


def test_csv_with_and_without_split_column(tmp_path, class_folders):
    rows = [(p.relative_to(class_folders.parent), p.parent.name) for p in sorted(class_folders.rglob("*.png"))]
    csv_path = write_csv(tmp_path / "labels.csv", rows)
    source = resolve_source(csv_path, valid_pct=0.2)
    assert len(source.samples) == 80 and source.kind == "csv"
    assert all(s.path.is_file() for s in source.samples)  # relative to the CSV's folder
    with_split = write_csv(tmp_path / "split.csv", rows, splits=["train", "val", "test", "train"] * 20)
    assert resolve_source(with_split).splits == ["train", "valid", "test"]


def test_fraction_is_stratified_and_keeps_valid(class_folders):
    source = resolve_source(class_folders, valid_pct=0.25, seed=0)
    small = source.with_fraction(0.2, seed=0)
    assert Counter(s.label for s in small.split("train")) == {"0": 3, "1": 3, "2": 3, "3": 3}
    assert len(small.split("valid")) == len(source.split("valid"))


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "no images in class folders"),
        ("one_class", "only one class"),
        ("differing", "missing from valid: 2"),
        ("not_csv", "not a .csv"),
    ],
)
def test_bad_layouts_name_the_problem(tmp_path, layout, message):
    from tests_support import make_bad_layout

    with pytest.raises(DataError, match=message):
        resolve_source(make_bad_layout(tmp_path, layout))


def test_builtin_digits_has_a_fixed_split():
    source = resolve_source("builtin:digits")
    counts = {k: sum(v.values()) for k, v in source.counts().items()}
    assert counts == {"train": 1259, "valid": 179, "test": 359}
    with pytest.raises(DataError, match=r"builtin:digit is not a built-in dataset.*digits"):
        resolve_source("builtin:digit")
