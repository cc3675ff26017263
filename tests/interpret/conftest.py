"""Fixtures for the interpret tests: a private copy of the session's trained run, and a PNG check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A copy of the session's run, so writing plots into it leaves the shared run untouched."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def check_png():
    def check(path: Path, min_size: tuple[int, int] = (300, 150)) -> tuple[int, int]:
        """A readable PNG of sensible size that is not one flat colour."""
        with Image.open(path) as image:
            assert image.format == "PNG", path
            width, height = image.size
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        assert min_size[0] <= width <= 4000 and min_size[1] <= height <= 4000, (path.name, image.size)
        assert pixels.std() > 5, f"{path.name} is blank"
        return width, height

    return check
