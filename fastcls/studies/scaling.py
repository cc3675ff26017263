"""Scaling studies: how accuracy grows with data size, for each model and initialisation.

The grid is arch × data fraction × init (`none`: random init, `pretrained`: fine-tuned from the
arch's pretrained weights). Every cell trains the same number of epochs on a stratified fraction
of train (valid and test stay whole), then is scored on its own training images and on valid,
which shows both the generalisation gap and where more data stops helping.

A study folder holds one budget: its settings (data, epochs, sizes, ...) are recorded in
`study.json`, and a later call with other settings is refused rather than mixed into the same
plot. Cells already trained are reused, so an interrupted study continues where it stopped, and
a second call may add cells (another arch, another init) to the same folder.

    result = scaling("builtin:digits", ["cnn"], ["1/16", "1/2", "1"], epochs=3, out="runs/scaling/cnn")
    [(c.fraction, c.valid_accuracy) for c in result.cells]
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.errors import ConfigError, FastclsError, RunError
from fastcls.registry import Registry
from fastcls.runs import atomic_write_text

if TYPE_CHECKING:
    from fastcls.config import Config
    from fastcls.reporting import Reporter

__all__ = ["INITS", "RESULT_COLUMNS", "Cell", "Init", "ScalingResult", "fraction_label", "parse_list", "scaling"]

STUDY_FILE = "study.json"
CELL_FILE = "cell.json"
RESULT_COLUMNS = (
    "arch",
    "init",
    "fraction",
    "train_images",
    "epochs",
    "train_accuracy",
    "valid_accuracy",
    "test_accuracy",
    "seconds",
    "run",
)


@dataclass(frozen=True)
class Init:
    """How a cell's weights start: the config command and whether pretrained weights are loaded."""

    name: str
    command: str
    pretrained: bool
    help: str


INITS: Registry[Init] = Registry(
    "weights",
    {
        i.name: i
        for i in (
            Init("none", "train", False, "random initialisation, every layer trained (strategy full)"),
            Init("pretrained", "finetune", True, "the arch's pretrained weights, fine-tuned (default freeze-unfreeze)"),
        )
    },
    hint=" (the init of a cell); e.g. --weights none,pretrained",
)


@dataclass
class Cell:
    """One trained grid cell and its scores."""

    arch: str
    init: str
    fraction: float
    label: str  # the fraction as written in folder names, e.g. 1-16
    run: str
    train_images: int
    epochs: int
    train_accuracy: float
    valid_accuracy: float
    test_accuracy: float | None
    seconds: float
    reused: bool = False

    def row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RESULT_COLUMNS}


@dataclass
class ScalingResult:
    """The cells of this call's grid (trained now or reused), and every file of the study folder."""

    data: str
    out: Path
    epochs: int
    cells: list[Cell]
    all_cells: list[Cell]
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "out": str(self.out),
            "epochs": self.epochs,
            "cells": [asdict(c) for c in self.cells],
            "files": {k: str(v) for k, v in self.files.items()},
        }


def parse_list(value: str | Sequence[Any], what: str) -> list[str]:
    """`"a,b"` or `["a", "b"]` -> ["a", "b"]; empty is an error naming `what`."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    items = [item.strip() for item in items if item.strip()]
    if not items:
        raise ConfigError(f"{what} is empty; give a comma-separated list, e.g. --{what} a,b.")
    if len(set(items)) != len(items):
        raise ConfigError(f"{what} {', '.join(items)} names an entry twice; list each once.")
    return items


def fraction_label(fraction: float) -> str:
    """0.0625 -> '1-16', 1.0 -> '1': readable in folder names."""
    exact = Fraction(fraction).limit_denominator(4096)
    return str(exact.numerator) if exact.denominator == 1 else f"{exact.numerator}-{exact.denominator}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _cell_key(config: Config) -> dict[str, Any]:
    settings = config.to_dict()
    settings.pop("run", None)
    return json.loads(json.dumps(settings))


def _study_key(base: Config) -> dict[str, Any]:
    """The settings every cell shares: the config with the grid's own axes set to fixed values."""
    neutral = base.merged({"model": {"arch": "cnn", "pretrained": False}, "data": {"fraction": 1.0}})
    key = _cell_key(neutral)
    key.pop("command", None)
    return key


def _claim_study(out: Path, key: dict[str, Any]) -> None:
    from fastcls.studies.sweep import settings_differences

    marker = out / STUDY_FILE
    if marker.is_file():
        stored = json.loads(marker.read_text(encoding="utf-8")).get("settings")
        differ = settings_differences(stored, key)
        if differ:
            raise ConfigError(
                f"{out} holds a scaling study with other settings: {'; '.join(differ[:4])}. Cells with different "
                "budgets would share one plot; pass the same settings, or another --out."
            )
        return
    atomic_write_text(marker, json.dumps({"format": "fastcls.scaling/1", "settings": key}, indent=2) + "\n")


def _cell_config(base: Config, arch: str, init: Init, fraction: float, epochs: int, folder: Path) -> Config:
    """The config of one cell: the same epoch budget for every cell.

    A pretrained cell with the freeze-unfreeze strategy spends `freeze_epochs` of its budget on
    the head, so its `epochs` (the unfrozen phase) is the budget minus those.
    """
    settings: dict[str, Any] = {"command": init.command, "arch": arch, "pretrained": init.pretrained,
                                "fraction": fraction, "epochs": epochs}  # fmt: skip
    if not init.pretrained:
        settings.update(strategy="full", weights=None)
    elif base.train.strategy in (None, "freeze-unfreeze"):
        head = base.train.freeze_epochs
        if epochs <= head:
            raise ConfigError(
                f"epochs {epochs} leaves no unfrozen epoch after freeze_epochs {head} for pretrained cells; "
                f"give --epochs {head + 1} or more, or --freeze-epochs {epochs - 1}."
            )
        settings["epochs"] = epochs - head
    from fastcls.config import Config

    nested = Config.nest(settings)
    nested["run"] = {"out": str(folder), "exist_ok": False}
    return base.merged(nested)


def _read_cells(out: Path) -> list[Cell]:
    cells = []
    for file in sorted((out / "cells").glob(f"*/{CELL_FILE}")):
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            raw.pop("key", None)
            cells.append(Cell(**(raw | {"reused": True})))
        except (OSError, json.JSONDecodeError, TypeError):
            continue
    return sorted(cells, key=lambda c: (c.arch, c.init, c.fraction))


def _train_cell(config: Config, arch: str, init: str, fraction: float, report: Reporter) -> Cell:
    from fastcls.runner import train_run

    start = time.perf_counter()
    clf, path = train_run(config, "quiet")
    train = clf.evaluate(split="train")  # the fraction it trained on (the source keeps it)
    return Cell(
        arch=arch,
        init=init,
        fraction=fraction,
        label=fraction_label(fraction),
        run=str(path),
        train_images=train.n,
        epochs=len(clf.history),
        train_accuracy=train.accuracy,
        valid_accuracy=float(clf.metrics["accuracy"]),
        test_accuracy=clf.metrics.get("test_accuracy"),
        seconds=round(time.perf_counter() - start, 1),
    )


def scaling(
    data: str | Path,
    archs: str | Sequence[str],
    fractions: str | Sequence[str | float] = ("1/16", "1/4", "1"),
    inits: str | Sequence[str] = ("none",),
    *,
    epochs: int | None = None,
    out: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    base: Config | None = None,
    reporter: Reporter | str | None = "quiet",
) -> ScalingResult:
    """Train every cell of archs × fractions × inits (reusing cells already in `out`) and report.

    `settings` (flat names: size, bs, lr, blocks, ...) or `base` fix everything else, the same
    for every cell. Writes `results.csv` and `plots/scaling.png` (accuracy vs training images,
    log x, one line per arch × init) into `out`, each cell's run folder under `out/cells/`.

    >>> result = scaling("builtin:digits", "cnn", "1/8,1", epochs=2, out="runs/scaling/demo")  # doctest: +SKIP
    >>> [round(c.valid_accuracy, 2) for c in result.cells]  # doctest: +SKIP
    [0.61, 0.93]
    """
    from datetime import datetime

    from fastcls.config import Config, parse_fraction
    from fastcls.reporting import as_reporter

    arch_list = parse_list(archs, "arch")
    init_list = parse_list(inits, "weights")
    for name in init_list:
        INITS.check(name)
    values = sorted({parse_fraction(f) for f in parse_list(fractions, "fractions")})
    if "pretrained" in init_list and "cnn" in [a.lower() for a in arch_list]:
        raise ConfigError(
            "the scratch 'cnn' has no pretrained weights, so the cell cnn × pretrained cannot be trained. Drop "
            "pretrained from --weights, or run cnn separately with --weights none into the same --out (the study "
            "folder collects the cells of both calls)."
        )
    flat = dict(settings or {})
    fixed = sorted(set(flat) & {"arch", "fraction", "pretrained", "weights", "command"})
    if fixed:
        raise ConfigError(f"{', '.join(fixed)} is set by the scaling grid (--arch, --fractions, --weights); drop it.")
    if epochs is not None:
        flat["epochs"] = epochs
    base = (base or Config()).merged(Config.nest(flat | {"source": str(data)}))
    out = Path(out).expanduser() if out else Path("runs") / "scaling" / f"scaling-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    _claim_study(out, _study_key(base))
    report = as_reporter(reporter)
    budget = base.train.epochs
    grid = [(a, INITS[i], f) for a in arch_list for i in init_list for f in values]
    cells: list[Cell] = []
    for n, (arch, init, fraction) in enumerate(grid, 1):
        folder = out / "cells" / f"{_safe(arch)}-{init.name}-{fraction_label(fraction)}"
        config = _cell_config(base, arch, init, fraction, budget, folder)
        key = _cell_key(config)
        where = f"cell {n}/{len(grid)} ({arch}, {init.name}, fraction {fraction_label(fraction).replace('-', '/')})"
        record = folder / CELL_FILE
        if record.is_file():
            stored = json.loads(record.read_text(encoding="utf-8"))
            if stored.get("key") == key:
                stored.pop("key")
                cells.append(Cell(**(stored | {"reused": True})))
                report.info(f"{where}: reused {folder}")
                continue
        if folder.exists() and any(folder.iterdir()):
            raise RunError(
                f"{folder} exists but is not a finished cell of this study (interrupted, or trained with other "
                "settings); delete it and run again to retrain that cell."
            )
        report.info(f"{where}: training")
        try:
            cell = _train_cell(config, arch, init.name, fraction, report)
        except FastclsError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        atomic_write_text(record, json.dumps(asdict(cell) | {"key": key}, indent=2, default=str) + "\n")
        cells.append(cell)
        report.info(
            f"{where}: {cell.train_images} train images, train accuracy {cell.train_accuracy:.4f}, valid "
            f"{cell.valid_accuracy:.4f} ({cell.seconds:.0f}s)"
        )
    every = _read_cells(out)
    result = ScalingResult(str(data), out, budget, cells, every)
    result.files["results"] = out / "results.csv"
    atomic_write_text(result.files["results"], _results_csv(every))
    title = f"{data}, {budget} epoch{'s' if budget != 1 else ''} per cell"
    result.files["plot"] = _scaling_plot(every, out / "plots" / "scaling.png", title)
    return result


def _results_csv(cells: list[Cell]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for cell in cells:
        row = cell.row()
        for key in ("train_accuracy", "valid_accuracy", "test_accuracy"):
            row[key] = "" if row[key] is None else f"{row[key]:.6f}"
        writer.writerow(row)
    return buffer.getvalue()


def _scaling_plot(cells: list[Cell], path: Path, title: str) -> Path:
    """Valid accuracy (solid) and train accuracy (dashed) against training images, log x,
    one colour per arch × init: the gap between them is overfitting, the slope is the data's worth."""
    from fastcls.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=100)
    lines: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        lines.setdefault((cell.arch, cell.init), []).append(cell)
    for i, ((arch, init), group) in enumerate(sorted(lines.items())):
        group = sorted(group, key=lambda c: c.train_images)
        xs = [c.train_images for c in group]
        colour = f"C{i % 10}"
        ax.plot(xs, [c.valid_accuracy for c in group], "o-", color=colour, label=f"{arch} ({init}): valid")
        ax.plot(xs, [c.train_accuracy for c in group], "s--", color=colour, alpha=0.55, label=f"{arch} ({init}): train")
    ax.set_xscale("log")
    ax.set(xlabel="training images (log scale)", ylabel="accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)
