"""`check_data` finds unreadable files, cross-split duplicates and layouts that cannot train."""

from __future__ import annotations

import shutil

from fastcls.data.checks import check_data
from tests_support import make_bad_layout


def test_reports_counts_sizes_unreadable_and_duplicates(split_folders):
    (split_folders / "train" / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    leaked = next((split_folders / "train" / "1").glob("*.png"))
    shutil.copy(leaked, split_folders / "test" / "1" / "leaked.png")
    report = check_data(split_folders)
    assert report.ok
    assert report.counts["train"]["0"] == 21 and report.counts["test"]["1"] == 6
    assert report.sizes["train"] == {"min": [16, 16], "median": [16, 16], "max": [16, 16]}
    assert len(report.unreadable) == 1 and "broken.png" in report.unreadable[0]
    assert len(report.duplicates) == 1 and any("leaked.png" in p for p in report.duplicates[0])
    assert len(report.warnings) == 2


def test_layout_errors_are_reported_not_raised(tmp_path):
    report = check_data(make_bad_layout(tmp_path, "one_class"))
    assert not report.ok and "only one class" in report.errors[0]


def test_a_split_with_no_readable_image_is_an_error(split_folders):
    for image in (split_folders / "test").rglob("*.png"):
        image.write_bytes(b"garbage")
    report = check_data(split_folders)
    assert not report.ok and report.errors == ["the test split has no readable images."]


def test_imbalance_and_the_decoded_size_say_which_loader_auto_picks(tmp_path, monkeypatch):
    from tests_support import write_class_folders

    folder = write_class_folders(tmp_path / "skewed", per_class=5, classes=2)
    more = write_class_folders(tmp_path / "more", per_class=25, classes=1, start=5)
    for n, path in enumerate(sorted(more.rglob("*.png"))):
        path.rename(folder / "0" / f"more-{n}.png")
    report = check_data(folder, size=32)
    train = report.counts["train"]
    assert report.imbalance == round(train["0"] / train["1"], 3) and report.imbalance > 3
    assert any("--balance" in w for w in report.warnings)
    assert report.decoded["bytes"] == 35 * 3 * 32 * 32 and report.decoded["loader"] == "memory"
    assert report.decoded["bytes_random_crop"] == report.decoded["bytes"]  # square images: nothing to keep
    monkeypatch.setenv("FASTCLS_MEMORY_BUDGET", "1000")
    assert check_data(folder, size=32).decoded["loader"] == "stream"
