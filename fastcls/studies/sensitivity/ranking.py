"""Ranking a model's parameters by sensitivity, and the result: rows, sensitivity.csv and its plots."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.errors import ConfigError, did_you_mean
from fastcls.runs import atomic_write_text
from fastcls.train.sensitive import CSV_COLUMNS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fastcls.reporting import Reporter
from fastcls.studies.sensitivity.methods import METHODS, PER, Probe, Scores, Unit, measuring, units_of

__all__ = [
    "SensitivityResult",
    "SensitivityRow",
    "rank_parameters",
    "sensitivity",
]


# -- the result ---------------------------------------------------------------------------------
@dataclass
class SensitivityRow:
    """One ranked unit. `score` is None for units ablation did not reach (they follow grad-norm)."""

    rank: int
    name: str
    shape: str
    numel: int
    score: float | None
    norm_score: float | None
    position: int = 0  # order in the model: the x axis of the depth plot
    group: str = ""  # fastcls layer group


@dataclass
class SensitivityResult:
    """A ranking of parameter tensors (or modules, or layer groups) by one method, most sensitive first."""

    method: str
    per: str
    rows: list[SensitivityRow]
    data: str = ""
    split: str = ""
    images: int = 0
    batches: int = 0
    seed: int = 0
    seconds: float = 0.0
    scored: int = 0  # rows with a score (all but ablation's non-candidates)
    files: dict[str, str] = field(default_factory=dict)

    def names(self, k: int | None = None) -> list[str]:
        """The names of the `k` most sensitive units (all when k is None)."""
        return [row.name for row in self.rows[:k]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_csv(self, path: str | Path) -> Path:
        """Write the ranking as CSV (atomically); `read_sensitive` reads it back."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in self.rows:
            score, norm = _number(row.score), _number(row.norm_score)
            writer.writerow((row.rank, row.name, row.shape, row.numel, score, norm, self.method, self.per))
        atomic_write_text(path, buffer.getvalue())
        return Path(path)

    def plot_top(self, path: str | Path, top: int = 20) -> Path:
        """A horizontal bar chart of the `top` scores, most sensitive at the top."""
        from fastcls.plots import pyplot, save_figure

        plt = pyplot()
        rows = [row for row in self.rows[:top] if row.score is not None]
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * max(len(rows), 1)), dpi=100)
        ax.barh(range(len(rows)), [row.score for row in rows], color="tab:blue")
        ax.set_yticks(range(len(rows)), [row.name for row in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel=f"{self.method} score", title=f"{self.method} sensitivity: top {len(rows)} {self.per}s")
        ax.grid(alpha=0.3, axis="x")
        return save_figure(fig, path)

    def plot_depth(self, path: str | Path, top: int = 20) -> Path:
        """Score against position in the model (log scale when all scores are positive), the `top`
        marked, and the layer groups shaded, to see where in depth the sensitivity sits."""
        from fastcls.plots import pyplot, save_figure

        plt = pyplot()
        rows = sorted((row for row in self.rows if row.score is not None), key=lambda row: row.position)
        fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
        spans: dict[str, list[int]] = {}
        for row in rows:
            spans.setdefault(row.group, []).append(row.position)
        for i, (name, positions) in enumerate(spans.items()):
            if name and len(spans) > 1:
                ax.axvspan(min(positions) - 0.5, max(positions) + 0.5, color=f"C{i % 10}", alpha=0.08)
                ax.text(
                    (min(positions) + max(positions)) / 2,
                    1.0,
                    name,
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.plot([r.position for r in rows], [r.score for r in rows], ".-", color="tab:gray", lw=0.6, ms=4)
        best = [r for r in rows if r.rank <= top]
        ax.plot([r.position for r in best], [r.score for r in best], "o", color="tab:red", ms=5, label=f"top {top}")
        for r in (r for r in best if r.rank <= 3):
            ax.annotate(r.name, (r.position, r.score), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if rows and all(r.score > 0 for r in rows):
            ax.set_yscale("log")
        elif rows:
            # linear within 1/1000 of the largest |score|: negatives and near-zeros stay readable
            ax.set_yscale("symlog", linthresh=max(max(abs(r.score) for r in rows) * 1e-3, 1e-12))
        ax.set(xlabel=f"{self.per} position in the model (input → output)", ylabel=f"{self.method} score")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best")
        return save_figure(fig, path)

    def save(self, path: str | Path, top: int = 20) -> dict[str, Path]:
        """The CSV at `path`, and `plots/<stem>_top.png`, `plots/<stem>_depth.png` beside it."""
        path = Path(path)
        plots = path.parent / "plots"
        written = {
            "csv": self.to_csv(path),
            "top": self.plot_top(plots / f"{path.stem}_top.png", top),
            "depth": self.plot_depth(plots / f"{path.stem}_depth.png", top),
        }
        self.files = {key: str(value) for key, value in written.items()}
        return written


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.9g}"


def _ranked(units: list[Unit], scores: Scores) -> list[SensitivityRow]:
    """Scored units by score (ties: model order), then unscored ones by the fallback order."""
    values = scores.values
    fallback = scores.fallback or [0.0] * len(units)

    def key(i: int) -> tuple:
        value = values[i]
        if value is None or math.isnan(value):
            return (1, -fallback[i], i)
        return (0, -value, i)

    scale = max((abs(v) for v in values if v is not None and not math.isnan(v)), default=0.0)
    rows = []
    for rank, i in enumerate(sorted(range(len(units)), key=key), start=1):
        value, unit = values[i], units[i]
        norm = None if value is None else (value / scale if scale > 0 else 0.0)
        rows.append(SensitivityRow(rank, unit.name, unit.shape, unit.numel, value, norm, unit.position, unit.group))
    return rows


def _check_choice(kind: str, value: str, choices: Iterable[str], flag: str) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"sensitivity {kind} {value!r} is not one of {', '.join(choices)}; pass {flag} "
            f"{choices[0]} (or another of them).{did_you_mean(value, choices)}"
        )


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"sensitivity {name} must be a whole number of at least 1, not {value!r}.")


# -- the public functions -----------------------------------------------------------------------
def rank_parameters(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    method: str = "grad-norm",
    per: str = "tensor",
    candidates: int = 20,
    seed: int = 0,
    reporter: Reporter | str | None = "quiet",
) -> SensitivityResult:
    """Rank the parameters of any classifier `model` by `method` over `batches` of (inputs, labels).

    The model is measured in eval mode with cross-entropy and left exactly as it was; the global
    RNG state is left as it was too (the seed applies inside).

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    >>> batches = [(torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,)))]
    >>> rank_parameters(model, batches, "fisher").names()
    ['1.weight', '1.bias']
    """
    import torch

    from fastcls.reporting import as_reporter

    METHODS.check(method)
    _check_choice("per", per, PER, "--per")
    _check_positive("candidates", candidates)
    units = units_of(model, per)
    probe = Probe(model, batches, as_reporter(reporter), candidates)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), measuring(model):
        torch.manual_seed(seed)
        scores = METHODS[method].score(probe, units)
    rows = _ranked(units, scores)
    return SensitivityResult(
        method=method,
        per=per,
        rows=rows,
        images=probe.n_images,
        batches=probe.n_batches,
        seed=seed,
        seconds=round(time.perf_counter() - start, 3),
        scored=sum(row.score is not None for row in rows),
    )


def sensitivity(
    run_or_classifier: Any,
    data: str | Path | None = None,
    split: str = "valid",
    method: str = "grad-norm",
    per: str = "tensor",
    batches: int | None = None,
    top: int = 20,
    seed: int = 0,
    candidates: int | None = None,
    bs: int = 64,
    reporter: Reporter | str | None = "quiet",
) -> SensitivityResult:
    """Rank a trained model's parameter tensors by how much the validation loss depends on them.

    `run_or_classifier` is a run folder or an ImageClassifier; `data` defaults to what it was
    trained on. `batches` limits the measurement to that many batches of `bs` images, drawn at
    random with `seed` (all images when None). Ablation scores the `candidates` (default `top`)
    units that grad-norm ranks highest. Nothing is written: call `.save(path)` for the CSV and
    plots, as `fastcls sensitivity` does. Same seed, same images, same scores.

    >>> result = sensitivity("runs/digits-cnn", method="fisher", top=5)  # doctest: +SKIP
    >>> result.names(2)  # doctest: +SKIP
    ['head.out.weight', 'head.fc.weight']
    """
    import torch

    from fastcls.data.loaders import label_index
    from fastcls.data.pipeline import scoring_loader
    from fastcls.reporting import as_reporter

    METHODS.check(method)
    _check_choice("per", per, PER, "--per")
    for name, value in (("--top", top), ("--batches", batches), ("--candidates", candidates), ("--bs", bs)):
        _check_positive(name, value)
    if isinstance(run_or_classifier, str | Path):
        from fastcls.api import load  # the API layer; imported here so lower layers can use read_sensitive

        with torch.random.fork_rng(devices=[]):  # building the model draws from the global RNG
            clf = load(run_or_classifier)
    else:
        clf = run_or_classifier
        clf._require_trained()
    report = as_reporter(reporter)
    spec, split, samples = clf._split_samples(data, split)
    if batches is not None and batches * bs < len(samples):
        chosen = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[: batches * bs]
        samples = [samples[i] for i in chosen.sort().values.tolist()]
    index = label_index(samples, clf.classes)
    labels = torch.tensor([index[s.label] for s in samples], dtype=torch.long)
    device = next(clf.model.parameters()).device
    # in memory when the images fit the budget (ablation passes over them many times), else streamed
    loader = scoring_loader(
        [s.path for s in samples], labels, clf.preprocessing, bs, device, clf.config.data.on_bad_image, report, split
    )
    result = rank_parameters(clf.model, loader, method, per, candidates or top, seed, report)
    result.data, result.split = spec, split
    return result
