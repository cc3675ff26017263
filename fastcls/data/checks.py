"""`fastcls data check`: scan every image once and say what would hurt training before it starts."""

from __future__ import annotations

import hashlib
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastcls.config import flag
from fastcls.data.images import BadImageError, open_rgb
from fastcls.data.sources import resolve_source
from fastcls.errors import DataError
from fastcls.reporting import Reporter

__all__ = ["IMBALANCE_WARNING", "DataReport", "check_data"]

IMBALANCE_WARNING = 3.0  # max/min class count in train above which the report suggests --balance


@dataclass
class DataReport:
    """Counts, sizes and problems; `errors` would break training, `warnings` would not."""

    data: str
    kind: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    sizes: dict[str, dict[str, list[int]]]  # split -> min/median/max of [width, height]
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    imbalance: float | None = None  # largest / smallest class count in train (None: a class is empty)
    # train + valid decoded at `size`: bytes as centre crops and as whole images (random crops), the
    # memory budget, and the loader `--loader auto` picks for each
    decoded: dict[str, int | str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _scan(path: Path) -> tuple[str | None, tuple[int, int] | None, str | None]:
    """(content hash, size, error) of one file."""
    try:
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError as exc:
        return None, None, f"{path}: {exc.strerror or exc}"
    try:
        return digest, open_rgb(path).size, None
    except BadImageError as exc:
        return digest, None, str(exc)


def _decoded(sizes: dict[str, list[tuple[int, int]]], size: int) -> dict[str, int | str]:
    """What train and valid take decoded at `size` (squish/centre crop, crop_pct 1) and which loader
    `--loader auto` picks, with and without random-crop augmentation (whole training images kept)."""
    from fastcls.data.images import Preprocessing
    from fastcls.data.loaders import memory_budget
    from fastcls.data.pipeline import choose_loader, decoded_bytes

    prep = Preprocessing(size)
    train, valid = sizes.get("train", []), sizes.get("valid", [])
    fixed = decoded_bytes(len(train) + len(valid), prep)
    whole = decoded_bytes(len(train), prep, uncropped=True, sizes=train) + decoded_bytes(len(valid), prep)
    budget = memory_budget()
    return {
        "size": size,
        "bytes": fixed,
        "bytes_random_crop": whole,
        "budget": budget,
        "loader": choose_loader("auto", fixed, budget),
        "loader_random_crop": choose_loader("auto", whole, budget),
    }


def check_data(
    spec: str | Path, valid_pct: float = 0.2, seed: int = 42, reporter: Reporter | None = None, size: int = 224
) -> DataReport:
    """Decode every image of DATA and report class counts, sizes, unreadable files and duplicates,
    class imbalance, and the decoded size at `size` px (so you know which loader `auto` will pick).

    A layout problem (missing folder, one class, class sets that differ) comes back as an error in
    the report rather than an exception, so the whole picture is shown at once.
    """
    input_size = size  # `size` is reused below for each image's size
    try:
        source = resolve_source(spec, valid_pct, seed)
    except DataError as exc:
        return DataReport(str(spec), "unknown", [], {}, {}, errors=[str(exc)])
    reporter = reporter or Reporter("quiet")
    with (
        reporter.task("scan images", len(source.samples)) as task,
        ThreadPoolExecutor(os.cpu_count() or 1) as pool,
    ):
        results = []
        for result in pool.map(_scan, [s.path for s in source.samples], chunksize=32):
            results.append(result)
            task.advance()
    report = DataReport(source.spec, source.kind, source.classes, source.counts(), {})
    by_hash: dict[str, list[tuple[str, Path]]] = {}
    sizes: dict[str, list[tuple[int, int]]] = {}
    readable: dict[str, int] = {}
    for sample, (digest, size, error) in zip(source.samples, results, strict=True):
        if digest is not None:
            by_hash.setdefault(digest, []).append((sample.split, sample.path))
        if error:
            report.unreadable.append(error)
            continue
        sizes.setdefault(sample.split, []).append(size)
        readable[sample.split] = readable.get(sample.split, 0) + 1
    for split in [name for name in source.splits if name in sizes]:
        values = sizes[split]
        widths, heights = [w for w, _ in values], [h for _, h in values]
        report.sizes[split] = {
            "min": [min(widths), min(heights)],
            "median": [int(statistics.median(widths)), int(statistics.median(heights))],
            "max": [max(widths), max(heights)],
        }
    report.decoded = _decoded(sizes, input_size)
    train_counts = list(report.counts.get("train", {}).values())
    if train_counts and min(train_counts) > 0:
        report.imbalance = round(max(train_counts) / min(train_counts), 3)
        if report.imbalance > IMBALANCE_WARNING:
            report.warnings.append(
                f"train classes are imbalanced (largest/smallest = {report.imbalance:.1f}); consider "
                f"{flag('balance')} sampler or {flag('balance')} loss, and read the per-class scores."
            )
    for entries in by_hash.values():
        if len({split for split, _ in entries}) > 1:
            report.duplicates.append([f"{split}:{path}" for split, path in entries])
    if report.unreadable:
        report.warnings.append(
            f"{len(report.unreadable)} unreadable image(s) will be skipped in training "
            f"(or stop it with {flag('on_bad_image')} error)."
        )
    if report.duplicates:
        report.warnings.append(
            f"{len(report.duplicates)} image(s) appear in more than one split (same bytes): "
            "validation and test scores will be optimistic."
        )
    for split in source.splits:
        if not readable.get(split):
            report.errors.append(f"the {split} split has no readable images.")
    for split, per_class in report.counts.items():
        empty = [name for name, n in per_class.items() if n == 0]
        if empty and split == "train":
            report.errors.append(f"train has no images of: {', '.join(empty)}.")
    return report
