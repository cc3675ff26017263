"""`fastcls interpret`: explain a trained run with plots, tables and an index in report.md.

Every plot is an entry in `PLOTS` (registry.py); `interpret` draws the chosen ones from one
scoring pass over a split and writes PNGs (and the CSVs behind them) under the run's plots/.
Nothing here imports torch, matplotlib or scikit-learn until a plot is drawn.

    >>> result = interpret("runs/digits-cnn", only="confusion,cam")  # doctest: +SKIP
    >>> [p.name for p in result.paths]  # doctest: +SKIP
    ['confusion.png', 'confusion.csv', 'cam.png']
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastcls.errors import ConfigError, did_you_mean
from fastcls.interpret.context import NothingToDraw, Options, load_context
from fastcls.interpret.registry import PLOTS, Plot
from fastcls.reporting import Reporter, as_reporter

__all__ = ["PLOTS", "InterpretResult", "Plot", "interpret", "select_plots"]


@dataclass
class InterpretResult:
    """What `interpret` did: the files written per plot, plots skipped (and why), and the scores."""

    run: Path
    data: str
    split: str
    n: int
    accuracy: float
    files: dict[str, list[Path]]
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    layer: str | None = None
    report: Path | None = None

    @property
    def paths(self) -> list[Path]:
        return [path for paths in self.files.values() for path in paths]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run),
            "data": self.data,
            "split": self.split,
            "n": self.n,
            "accuracy": self.accuracy,
            "layer": self.layer,
            "files": {name: [str(p) for p in paths] for name, paths in self.files.items()},
            "skipped": self.skipped,
            "seconds": self.seconds,
            "report": str(self.report) if self.report else None,
        }


def select_plots(only: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Registry names chosen by `only` ("a,b" or a list; None for all), in registry order."""
    if only is None:
        return list(PLOTS)
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    unknown = [n for n in names if n not in PLOTS]
    if unknown or not names:
        bad = unknown[0] if unknown else ""
        raise ConfigError(
            f"unknown plot {bad!r} in --only; choose from {', '.join(PLOTS)} (comma-separated)."
            f"{did_you_mean(bad, PLOTS) if bad else ''}"
        )
    return [name for name in PLOTS if name in names]


def interpret(
    run: str | Path,
    data: str | Path | None = None,
    split: str | None = None,
    only: str | list[str] | None = None,
    *,
    layer: str | None = None,
    units: int = 10,
    images: int = 8,
    seed: int = 0,
    reporter: Reporter | str | None = "quiet",
) -> InterpretResult:
    """Draw the chosen plots for RUN on a split (default: test if the data has one, else valid).

    `data` defaults to what the run was trained on. `layer` names the module Grad-CAM and guided
    backprop explain (default: the last convolutional stage); `units` is how many units guided
    backprop shows, `images` how many images cam and top_losses show. Files go under RUN/plots/
    and an "Interpretation" section is written into (or replaced in) RUN/report.md. The model is
    left exactly as it was.
    """
    names = select_plots(only)
    for label, value in (("units", units), ("images", images)):
        if value < 1:
            raise ConfigError(f"--{label} {value} must be at least 1.")
    report = as_reporter(reporter)
    ctx = load_context(run, data, split, Options(layer, units, images, seed), report)
    if layer is not None:
        _ = ctx.layer_name  # a bad --layer fails before any plot is drawn
    result = InterpretResult(ctx.run, ctx.data, ctx.split, ctx.n, ctx.accuracy, {})
    report.info(f"interpret {ctx.run}: {ctx.data}, {ctx.split} split, {ctx.n} images, accuracy {ctx.accuracy:.4f}")
    with report.task("interpret", len(names)) as task:
        for name in names:
            start = time.perf_counter()
            try:
                paths = PLOTS[name].draw(ctx)
            except NothingToDraw as exc:
                result.skipped[name] = str(exc)
                report.warn(f"{name}: skipped, {exc}")
                task.advance()
                continue
            result.files[name] = paths
            result.seconds[name] = round(time.perf_counter() - start, 2)
            shown = ", ".join(str(p.relative_to(ctx.run)) for p in paths)
            report.info(f"{name}: {shown} ({result.seconds[name]:.1f}s)")
            task.advance()
    if any(name in result.files for name in ("cam", "guided")):
        result.layer = ctx.layer_name
    from fastcls.interpret.section import write_section

    result.report = write_section(ctx)
    report.info(f"report: {result.report} (section 'Interpretation')")
    return result
