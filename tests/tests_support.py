"""Helpers shared by several test modules (plain functions, not fixtures)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def digit_images(per_class: int = 30, classes: int = 10, size: int = 16, start: int = 0):
    """(uint8 images at `size`, labels) from load_digits: `per_class` of each of `classes`, taken from
    position `start` of a fixed shuffle, so different `start`s give disjoint images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.RandomState(0)
    images, labels = [], []
    for label in range(classes):
        index = np.flatnonzero(digits.target == label)
        for i in rng.permutation(index)[start : start + per_class]:
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            images.append(np.asarray(Image.fromarray(pixels).resize((size, size), Image.NEAREST)))
            labels.append(str(label))
    return images, labels


def write_class_folders(root: Path, per_class: int = 30, classes: int = 10, fmt: str = "png", start: int = 0) -> Path:
    """root/<digit>/<n>.<fmt>, grayscale or RGB JPEG."""
    images, labels = digit_images(per_class, classes, start=start)
    for n, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        (root / label).mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels)
        if fmt == "jpg":
            image.convert("RGB").save(root / label / f"{n:04d}.jpg", quality=95)
        else:
            image.save(root / label / f"{n:04d}.png")
    return root


def write_csv(path: Path, rows, splits=None) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"] + (["split"] if splits else []))
        for i, (file, label) in enumerate(rows):
            writer.writerow([file, label] + ([splits[i]] if splits else []))
    return path


def make_bad_layout(tmp_path: Path, layout: str) -> Path:
    """A DATA path broken in one named way."""
    root = tmp_path / layout
    if layout == "missing":
        return root
    if layout == "empty":
        (root / "a").mkdir(parents=True)
        return root
    if layout == "one_class":
        return write_class_folders(root, per_class=3, classes=1)
    if layout == "differing":
        write_class_folders(root / "train", per_class=3, classes=3)
        write_class_folders(root / "valid", per_class=3, classes=2)
        return root
    if layout == "not_csv":
        root.mkdir()
        (root / "labels.txt").write_text("path,label\n")
        return root / "labels.txt"
    raise ValueError(layout)
