"""Turn a DATA argument into labelled files with splits.

DATA may be a folder with train/ and valid/ (or val/) and optional test/, a folder of class
folders, a CSV of path,label[,split], or `builtin:NAME`. Every layout ends as the same
`ImageSource`, so nothing downstream cares which one the user had.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from fastcls.data.builtin import builtin_folder
from fastcls.data.images import IMAGE_SUFFIXES
from fastcls.data.split import stratified_split, stratified_subset
from fastcls.errors import DataError

__all__ = ["SPLITS", "ImageSource", "Sample", "resolve_source"]

SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: str


@dataclass
class ImageSource:
    """Labelled image files, each in a split; `classes` is sorted and shared by all splits."""

    spec: str
    kind: str
    samples: list[Sample]
    classes: list[str] = field(default_factory=list)
    split_by: str = "given"  # "given" by the layout, or "valid_pct" when carved out of train

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    @property
    def splits(self) -> list[str]:
        present = {s.split for s in self.samples}
        return [name for name in SPLITS if name in present]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split, the number of files of each class."""
        out: dict[str, dict[str, int]] = {}
        for sample in self.samples:
            per_class = out.setdefault(sample.split, dict.fromkeys(self.classes, 0))
            per_class[sample.label] = per_class.get(sample.label, 0) + 1
        return {name: out[name] for name in SPLITS if name in out}

    def with_fraction(self, fraction: float, seed: int) -> ImageSource:
        """Keep a stratified `fraction` of train; valid and test stay whole."""
        if fraction >= 1:
            return self
        train = self.split("train")
        keep = {train[i].path for i in stratified_subset([s.label for s in train], fraction, seed)}
        samples = [s for s in self.samples if s.split != "train" or s.path in keep]
        return ImageSource(self.spec, self.kind, samples, self.classes, self.split_by)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    """Class name -> image files below that class folder (searched recursively)."""
    classes: dict[str, list[Path]] = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            files = sorted(p for p in child.rglob("*") if _is_image(p))
            if files:
                classes[child.name] = files
    return classes


def _split_folder(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        split = _SPLIT_ALIASES.get(child.name.lower())
        if child.is_dir() and split and split not in found:
            found[split] = child
    return found if "train" in found else {}


def _from_split_folders(spec: str, root: Path, folders: dict[str, Path]) -> ImageSource:
    samples = []
    per_split: dict[str, set[str]] = {}
    for split, folder in folders.items():
        classes = _class_folders(folder)
        if not classes:
            raise DataError(
                f"{folder} holds no class folders with images; put each class's images in {folder}/<class>/."
            )
        per_split[split] = set(classes)
        samples += [Sample(p, label, split) for label, files in classes.items() for p in files]
    _check_same_classes(per_split)
    return ImageSource(spec, "split-folders", samples, sorted(per_split["train"]))


def _check_same_classes(per_split: dict[str, set[str]]) -> None:
    train = per_split["train"]
    for split, classes in per_split.items():
        if classes != train:
            only_train = sorted(train - classes)
            only_here = sorted(classes - train)
            parts = []
            if only_train:
                parts.append(f"missing from {split}: {', '.join(only_train)}")
            if only_here:
                parts.append(f"only in {split}: {', '.join(only_here)}")
            raise DataError(
                f"class sets differ between train and {split} ({'; '.join(parts)}); every split "
                "needs the same class folders."
            )


def _from_csv(spec: str, path: Path) -> ImageSource:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            if "path" not in header or "label" not in header:
                raise DataError(
                    f"{path} needs a header with columns path,label (and optionally split); "
                    f"found: {', '.join(header) or 'nothing'}."
                )
            rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text CSV.") from None
    samples = []
    for line, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            raise DataError(f"{path} line {line}: path and label must both be filled in.")
        raw_split = row.get("split") or "train"
        split = _SPLIT_ALIASES.get(raw_split.lower())
        if split is None:
            raise DataError(f"{path} line {line}: split {raw_split!r} is not one of train, valid, val, test.")
        file = Path(row["path"])
        samples.append(Sample(file if file.is_absolute() else path.parent / file, row["label"], split))
    if not samples:
        raise DataError(f"{path} lists no images; add rows of path,label.")
    per_split: dict[str, set[str]] = {}
    for sample in samples:
        per_split.setdefault(sample.split, set()).add(sample.label)
    if "train" not in per_split:
        raise DataError(f"{path} has no rows in the train split; mark some rows split=train.")
    _check_same_classes(per_split)
    return ImageSource(spec, "csv", samples, sorted(per_split["train"]))


def _carve_valid(source: ImageSource, valid_pct: float, seed: int) -> ImageSource:
    if "valid" in source.splits:
        return source
    train = source.split("train")
    _, take = stratified_split([s.label for s in train], valid_pct, seed)
    moved = {train[i].path for i in take}
    samples = [
        Sample(s.path, s.label, "valid") if s.split == "train" and s.path in moved else s for s in source.samples
    ]
    return ImageSource(source.spec, source.kind, samples, source.classes, "valid_pct")


def resolve_source(spec: str | Path, valid_pct: float = 0.2, seed: int = 42) -> ImageSource:
    """Find the labelled files behind DATA; carve a stratified valid split when none is given.

    >>> source = resolve_source("builtin:digits")
    >>> source.splits
    ['train', 'valid', 'test']
    """
    text = str(spec)
    if text.startswith("builtin:"):
        source = resolve_source(builtin_folder(text.removeprefix("builtin:")))
        source.spec = text
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise DataError(f"data {text!r} does not exist; give a folder, a CSV file or builtin:digits.")
        if path.is_file():
            if path.suffix.lower() != ".csv":
                raise DataError(f"data {text!r} is a file but not a .csv; give a folder or a CSV of path,label.")
            source = _from_csv(text, path)
        else:
            folders = _split_folder(path)
            if folders:
                source = _from_split_folders(text, path, folders)
            else:
                classes = _class_folders(path)
                if not classes:
                    raise DataError(
                        f"{text} has no images in class folders; lay it out as {text}/<class>/<image>, "
                        f"or {text}/train/<class>/ and {text}/valid/<class>/."
                    )
                samples = [Sample(p, label, "train") for label, files in classes.items() for p in files]
                source = ImageSource(text, "class-folders", samples, sorted(classes))
    if len(source.classes) < 2:
        raise DataError(
            f"{text} has only one class ({', '.join(source.classes)}); a classifier needs at least "
            "two class folders or labels."
        )
    return _carve_valid(source, valid_pct, seed)
