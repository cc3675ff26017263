"""Shared fixtures: real image folders written from scikit-learn's digits, and one trained run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests_support import write_class_folders

# Keep the builtin dataset cache out of the user's home for the whole test session.
os.environ.setdefault("FASTCLS_HOME", tempfile.mkdtemp(prefix="fastcls-home-"))


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    return write_class_folders(tmp_path / "digits", per_class=20, classes=4)


@pytest.fixture
def split_folders(tmp_path: Path) -> Path:
    root = tmp_path / "split"
    write_class_folders(root / "train", per_class=20, classes=3, start=0)
    write_class_folders(root / "val", per_class=5, classes=3, fmt="jpg", start=20)
    write_class_folders(root / "test", per_class=5, classes=3, start=25)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A cnn trained on builtin:digits and saved: shared by the evaluate/predict/CLI tests."""
    import fastcls

    folder = tmp_path_factory.mktemp("runs") / "digits-cnn"
    config = fastcls.Config().merged(
        {
            "model": {"arch": "cnn", "cnn": {"blocks": 3}},
            "train": {"epochs": 4, "seed": 0},
            "run": {"out": str(folder)},
        }
    )
    fastcls.train_run(config, reporter="quiet")
    return folder
