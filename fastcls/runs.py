"""The run folder, the unit of output: create it safely, write into it atomically, list and open it.

A run is trained into a hidden staging folder beside its final place (`fastcls.staging`) and
renamed into place only when complete, so `runs/` never holds a half-written run, even after kill -9.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastcls.atomic import atomic_write_bytes, atomic_write_text
from fastcls.errors import RunError
from fastcls.model_card import ModelCard

__all__ = [
    "METRIC_COLUMNS",
    "RunInfo",
    "atomic_write_bytes",
    "atomic_write_text",
    "default_run_name",
    "list_runs",
    "read_metrics",
    "require_run",
    "write_metrics",
]

METRIC_COLUMNS = (
    "epoch",
    "phase",
    "train_loss",
    "valid_loss",
    "accuracy",
    "top5",
    "lr",
    "seconds",
    "group_lrs",
)
MODEL_FILES = ("model.json", "model.safetensors")


def write_metrics(path: str | Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    columns = list(METRIC_COLUMNS) + [k for k in (rows[0] if rows else {}) if k not in METRIC_COLUMNS]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    text = ("phase", "group_lrs", "note")  # "0.001" is a list of one LR here, not a number
    return [{k: v if k in text else _number(v) for k, v in row.items() if v != ""} for row in rows]


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def default_run_name(arch: str) -> str:
    """`<arch>-<date>-<time>`, with the arch made filesystem-safe."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in arch)
    return f"{safe}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def require_run(path: str | Path) -> Path:
    """The run folder at `path`, or a RunError saying what is missing."""
    path = Path(path).expanduser()
    if not path.exists():
        staging = path.parent / f".{path.name}.partial"
        if staging.is_dir():
            raise RunError(
                f"run {str(path)!r} has not finished: it is being trained, or was interrupted, in {staging}; "
                f"`fastcls runs ls {path.parent}` says which, and how to resume it."
            )
        raise RunError(f"run {str(path)!r} does not exist; `fastcls runs ls` lists the runs you have.")
    if path.is_file() and path.name in MODEL_FILES:
        path = path.parent
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise RunError(
            f"{path} is not a fastcls run folder (missing {', '.join(missing)}); give a folder made by `fastcls train`."
        )
    return path


@dataclass
class RunInfo:
    path: Path
    arch: str
    classes: int
    epochs: int
    best_accuracy: float | None
    final_accuracy: float | None
    test_accuracy: float | None
    created: str
    stopped: str | None = None  # "SIGINT", "SIGTERM", "stop-after": resumable with --resume


def list_runs(root: str | Path = "runs") -> list[RunInfo]:
    """Every run folder directly below `root`, newest first."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise RunError(f"{root} is not a folder of runs.")
    infos = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not (folder / "model.json").is_file():
            continue
        try:
            card = ModelCard.read(folder)
        except RunError:  # damaged or foreign: not listed
            continue
        rows = read_metrics(folder / "metrics.csv")
        accuracies = [r["accuracy"] for r in rows if isinstance(r.get("accuracy"), float | int)]
        infos.append(
            RunInfo(
                path=folder,
                arch=card.arch,
                classes=card.num_classes,
                epochs=len(rows),
                best_accuracy=max(accuracies) if accuracies else None,
                final_accuracy=card.metrics.get("accuracy"),
                test_accuracy=card.metrics.get("test_accuracy"),
                created=card.created,
                stopped=card.stopped,
            )
        )
    return sorted(infos, key=lambda info: info.created, reverse=True)
