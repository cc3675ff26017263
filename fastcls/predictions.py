"""What a prediction is and which files it is made for: shared by the API, ensembles and exported models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastcls.errors import DataError

__all__ = ["Prediction", "expand_images", "rank_predictions"]


@dataclass
class Prediction:
    path: str
    label: str
    probability: float
    top: list[tuple[str, float]] = field(default_factory=list)


def expand_images(items: list[str | Path]) -> list[Path]:
    """Image files given, and every image under the folders given (sorted); a missing path is a DataError."""
    from fastcls.data.images import IMAGE_SUFFIXES  # with numpy: not for `fastcls --help`, which imports this

    paths: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.exists():
            paths.append(path)
        else:
            raise DataError(f"image {str(path)!r} does not exist.")
    if not paths:
        raise DataError("no images given: pass image files or folders that contain images.")
    return paths


def rank_predictions(probs: Any, paths: Sequence[str | Path], classes: Sequence[str], top: int) -> list[Prediction]:
    """One Prediction per row of an (N, classes) probability array: its `top` classes, best first."""
    k = max(1, min(top, len(classes)))
    results = []
    for path, row in zip(paths, probs, strict=True):
        order = row.argsort()[::-1][:k]
        ranked = [(classes[i], float(row[i])) for i in order]
        results.append(Prediction(str(path), ranked[0][0], ranked[0][1], ranked))
    return results
