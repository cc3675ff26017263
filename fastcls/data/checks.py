"""`fastcls data check`: scan every image once and say what would hurt training before it starts."""

from __future__ import annotations

import hashlib
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastcls.data.images import BadImageError, open_rgb
from fastcls.data.sources import resolve_source
from fastcls.errors import DataError
from fastcls.reporting import Reporter

__all__ = ["DataReport", "check_data"]


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


def check_data(
    spec: str | Path, valid_pct: float = 0.2, seed: int = 42, reporter: Reporter | None = None
) -> DataReport:
    """Decode every image of DATA and report class counts, sizes, unreadable files and duplicates.

    A layout problem (missing folder, one class, class sets that differ) comes back as an error in
    the report rather than an exception, so the whole picture is shown at once.
    """
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
    for entries in by_hash.values():
        if len({split for split, _ in entries}) > 1:
            report.duplicates.append([f"{split}:{path}" for split, path in entries])
    if report.unreadable:
        report.warnings.append(
            f"{len(report.unreadable)} unreadable image(s) will be skipped in training "
            "(or stop it with --on-bad-image error)."
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
