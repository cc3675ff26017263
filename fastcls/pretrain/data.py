"""The images pretraining learns from, and the labelled splits its probe scores on.

DATA may be any labelled DATA (its train split is used, labels ignored) or a folder of images
without class folders: every image below it. Images are decoded once into a uint8 tensor; each
item's two views come from lightly's transform with a seed drawn per item, so the views of an
epoch depend only on the run's seed, however many worker processes make them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastcls.config import flag
from fastcls.data.images import IMAGE_SUFFIXES, Preprocessing
from fastcls.data.loaders import DecodedSplit, decode_paths, decode_split
from fastcls.data.sources import ImageSource, resolve_source
from fastcls.errors import DataError
from fastcls.reporting import Reporter

__all__ = ["ImageFiles", "TwoViews", "decode_images", "find_images", "median_side", "probe_splits"]


@dataclass
class ImageFiles:
    """The files SSL trains on; `source` is the labelled DATA they came from, None for an unlabeled folder."""

    spec: str
    paths: list[Path]
    source: ImageSource | None

    @property
    def kind(self) -> str:
        return self.source.kind if self.source is not None else "unlabeled-folder"


def _unlabeled(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.parts)
    )


def find_images(spec: str, valid_pct: float, seed: int) -> ImageFiles:
    """Labelled DATA's train split, or every image of a folder that has no class layout."""
    try:
        source = resolve_source(spec, valid_pct, seed)
        return ImageFiles(source.spec, [s.path for s in source.split("train")], source)
    except DataError:
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise
        paths = _unlabeled(path)
        if not paths:
            raise DataError(
                f"{spec} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); pretraining needs a folder of "
                "images (class folders optional), a CSV or builtin:digits."
            ) from None
        return ImageFiles(spec, paths, None)


def median_side(paths: Sequence[Path], limit: int = 64) -> int:
    """The median short side of up to `limit` images (headers only), for a cnn without --size."""
    step = max(1, len(paths) // limit)
    sides = []
    for path in paths[::step][:limit]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except (OSError, SyntaxError, ValueError):
            continue
    return int(statistics.median(sides)) if sides else 64


def decode_images(
    files: ImageFiles, prep: Preprocessing, on_bad_image: str, reporter: Reporter
) -> tuple[DecodedSplit, DecodedSplit | None]:
    """(the SSL images, the same decoded with labels when DATA has them: the probe's train split)."""
    if files.source is not None:
        train = decode_split(
            files.source.split("train"), files.source.classes, prep, on_bad_image, reporter, "decode train"
        )
        images = train
    else:
        arrays, errors = decode_paths(files.paths, prep, reporter, "decode images")
        if errors and on_bad_image == "error":
            raise DataError(
                f"{len(errors)} unreadable image(s), first: {errors[0]}; fix or remove them, or pass "
                f"{flag('on_bad_image')} skip."
            )
        kept = [(a, p) for a, p in zip(arrays, files.paths, strict=True) if a is not None]
        if not kept:
            raise DataError(f"none of the {len(files.paths)} images in {files.spec} could be read, first: {errors[0]}.")
        if errors:
            reporter.warn(f"skipped {len(errors)} unreadable image(s), e.g. {errors[0]}")
        stacked = torch.from_numpy(np.stack([a for a, _ in kept]))
        images = DecodedSplit(stacked, torch.zeros(len(kept), dtype=torch.long), [p for _, p in kept], errors)
        train = None
    if len(images.labels) < 2:
        raise DataError(
            f"{files.spec} has {len(images.labels)} readable image; self-supervised pretraining compares images "
            "within a batch and needs at least 2 (in practice hundreds)."
        )
    return images, train


def probe_splits(
    source: ImageSource, prep: Preprocessing, on_bad_image: str, reporter: Reporter, train: DecodedSplit | None = None
) -> tuple[DecodedSplit, DecodedSplit, list[str]]:
    """(train, valid, classes) of labelled DATA at `prep`, for the k-NN or linear probe."""
    if train is None:
        train = decode_split(source.split("train"), source.classes, prep, on_bad_image, reporter, "decode probe train")
    valid = decode_split(source.split("valid"), source.classes, prep, on_bad_image, reporter, "decode probe valid")
    return train, valid, list(source.classes)


class TwoViews(torch.utils.data.Dataset):
    """Item `(index, seed)` -> lightly's two views of image `index`, drawn with `seed`.

    lightly's transforms draw from torch's and NumPy's global RNGs; seeding both per item (and
    putting them back afterwards) makes the views independent of worker count and timing.
    """

    def __init__(self, images: torch.Tensor, transform: Callable) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        image = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())
        numpy_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                np.random.seed(seed % 2**32)
                first, second = self.transform(image)[:2]
        finally:
            np.random.set_state(numpy_state)
        return first, second
