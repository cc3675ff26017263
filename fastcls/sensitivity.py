"""Which parameter tensors does the validation loss depend on most? `sensitivity` ranks them.

The plants study froze (or gave their own learning rate to) the two tensors the loss was most
sensitive to; this module produces that ranking for any run or torch model, and `read_sensitive`
hands the top K names to `fastcls finetune --freeze-sensitive/--boost-sensitive FILE:K`.

A method is one entry in `METHODS` (`@register`), scoring every *unit* (a parameter tensor, a
module or a layer group) from a `_Probe` over the validation batches:

- `grad-norm`: the sum over batches of each tensor's gradient L2 norm (one backward per batch);
- `fisher`: the diagonal empirical Fisher, the sum over *images* of the squared per-image
  gradient (one backward per image: 5x grad-norm's time on efficientnet_lite0 with bs 64;
  `--batches` caps it);
- `taylor`: |θ·∇θL| summed over batches, the first-order estimate of the loss change when the
  tensor is set to zero (Molchanov et al., 2019), one backward per batch;
- `ablation`: the rise in validation loss when the unit is set to zero (not to its initial value:
  a trained or pretrained run does not keep its initialisation, and rebuilding it would need the
  weights source again). One forward pass over the images per unit, so only the `candidates`
  units that grad-norm ranks highest are ablated; the others have no score and keep grad-norm's
  order after them. A shortlist, not a guarantee: zeroing is a large change that first-order
  scores predict poorly (on efficientnet_lite0, 20 candidates held 3 of the full top 10), so
  pass a large `candidates` when the full ablation ranking matters.

`per="module"` and `per="group"` sum the gradient methods' per-tensor scores over the module's
(or layer group's) tensors, which is exact for fisher and an upper bound of the unit's own
|θ·∇θL| for taylor; ablation zeroes all the unit's tensors together, since loss rises do not add.

`norm_score` is score / max |score|: 1.0 for the top unit, comparable across methods and models
whatever the method's units (norms, squares, loss differences).

Measuring is done in eval mode (BatchNorm uses its running statistics, dropout is off), on a
fixed, seeded choice of images, with every change to the model (train/eval flags,
requires_grad, zeroed tensors) undone in `finally`: the model is left bit-identical. Gradients
are taken with `torch.autograd.grad`, so no `.grad` attribute is touched either.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.errors import ConfigError, did_you_mean
from fastcls.registry import Registry
from fastcls.runs import atomic_write_text
from fastcls.train.sensitive import CSV_COLUMNS, CSV_NAME, check_sensitive_names, read_sensitive

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fastcls.reporting import Reporter

__all__ = [
    "CSV_COLUMNS",
    "CSV_NAME",
    "METHODS",
    "PER",
    "SensitivityMethod",
    "SensitivityResult",
    "SensitivityRow",
    "check_sensitive_names",
    "rank_parameters",
    "read_sensitive",
    "register",
    "sensitivity",
]

PER = ("tensor", "module", "group")
PRESELECT = "grad-norm"  # the cheap method that picks ablation's candidates


# -- the registry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SensitivityMethod:
    """A named way to score units; `score` returns one value per unit (None: not scored)."""

    name: str
    score: Callable[[_Probe, list[_Unit]], _Scores]
    summary: str


METHODS: Registry[SensitivityMethod] = Registry(
    "sensitivity method", hint="; pass --method grad-norm (or another of them)"
)


def register(name: str, summary: str) -> Callable:
    """Add a method to `METHODS` under `name`: the CLI, the tests and the docs pick it up from there."""

    def decorate(function: Callable[[_Probe, list[_Unit]], _Scores]) -> Callable:
        METHODS.register(name, SensitivityMethod(name, function, summary))
        return function

    return decorate


# -- what is scored -----------------------------------------------------------------------------
@dataclass
class _Unit:
    name: str
    params: list[str]  # named_parameters() names
    shape: str
    numel: int
    position: int  # order in the model (forward order for groups)
    group: str = ""


@dataclass
class _Scores:
    values: list[float | None]
    fallback: list[float] | None = None  # orders the units without a value (ablation's non-candidates)


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape) if len(shape) else "scalar"


def _group_of(model: nn.Module) -> dict[str, str]:
    """Parameter name -> its fastcls layer group (stem, stage1..., head); empty if none can be derived."""
    from fastcls.models.groups import layer_groups

    try:
        groups = layer_groups(model)
    except (IndexError, KeyError, TypeError, ValueError):  # a bare module with parameters only at its root
        return {}
    return {name: group.name for group in groups for name in group.params}


def _invert(group_of: dict[str, str]) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for name, group in group_of.items():
        members.setdefault(group, []).append(name)
    return members


def _units(model: nn.Module, per: str) -> list[_Unit]:
    params = dict(model.named_parameters())
    group_of = _group_of(model)
    if per == "tensor":
        return [
            _Unit(name, [name], _shape_text(p.shape), p.numel(), i, group_of.get(name, ""))
            for i, (name, p) in enumerate(params.items())
        ]
    if per == "module":
        members: dict[str, list[str]] = {}
        for name in params:
            members.setdefault(name.rpartition(".")[0] or "(model)", []).append(name)
        named = list(members.items())
    else:
        groups = _group_of(model)
        if not groups:
            raise ConfigError(
                f"{type(model).__name__} has no layer groups (its parameters hang on the model itself); "
                "use --per tensor or --per module."
            )
        named = list(_invert(groups).items())
    return [
        _Unit(
            name,
            names,
            f"{len(names)} tensor{'s' if len(names) != 1 else ''}",
            sum(params[n].numel() for n in names),
            i,
            name if per == "group" else group_of.get(names[0], ""),
        )
        for i, (name, names) in enumerate(named)
    ]


# -- measuring ----------------------------------------------------------------------------------
@contextmanager
def _measuring(model: nn.Module) -> Iterator[None]:
    """Eval mode and gradients on for every parameter; both restored exactly, whatever happens."""
    modes = [(module, module.training) for module in model.modules()]
    needs = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in needs:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in needs:
            p.requires_grad_(flag)
        for module, flag in modes:
            module.training = flag


class _Probe:
    """The model and the validation batches, with the passes the methods are built from."""

    def __init__(
        self,
        model: nn.Module,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        reporter: Reporter,
        candidates: int,
    ) -> None:
        self.model, self.batches, self.reporter, self.candidates = model, batches, reporter, candidates
        self.params = dict(model.named_parameters())
        self.n_batches = len(batches) if hasattr(batches, "__len__") else 0
        self.n_images = 0

    def _loss(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(self.model(x).float(), y, reduction=reduction)

    def batch_gradients(self, description: str) -> Iterator[dict[str, torch.Tensor]]:
        """Per batch, the gradient of its mean loss for every tensor (zeros where a tensor is unused)."""
        import torch

        names, tensors = list(self.params), list(self.params.values())
        with self.reporter.task(description, self.n_batches) as task:
            self.n_images = 0
            for x, y in self.batches:
                self.n_images += len(y)
                grads = torch.autograd.grad(self._loss(x, y), tensors, allow_unused=True)
                yield {
                    n: torch.zeros_like(t) if g is None else g for n, t, g in zip(names, tensors, grads, strict=True)
                }
                task.advance()

    def sample_gradients(self, description: str) -> Iterator[dict[str, torch.Tensor]]:
        """Per image, the gradient of its loss. A loop of batch-1 passes: on a CPU about as fast as
        torch.func's vmap (efficientnet_lite0, 64 images: 1.6 s against 1.3 s once vmap is warm, 18 s
        cold), and it works for any model, where vmap cannot trace data-dependent code."""
        import torch

        names, tensors = list(self.params), list(self.params.values())
        with self.reporter.task(description, self.n_batches) as task:
            self.n_images = 0
            for x, y in self.batches:
                self.n_images += len(y)
                for i in range(len(y)):
                    grads = torch.autograd.grad(self._loss(x[i : i + 1], y[i : i + 1]), tensors, allow_unused=True)
                    yield {n: g for n, g in zip(names, grads, strict=True) if g is not None}
                task.advance()

    def loss(self) -> float:
        """Mean loss over all the images (no gradients)."""
        import torch

        total, count = torch.zeros((), dtype=torch.float64), 0
        with torch.no_grad():
            for x, y in self.batches:
                total += self._loss(x, y, reduction="sum").double().cpu()
                count += len(y)
        self.n_images = count
        return float(total) / max(count, 1)


def _per_tensor(
    probe: _Probe, passes: Iterator[dict[str, torch.Tensor]], term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> dict[str, float]:
    """Sum `term(theta, grad)` over the passes for each tensor (accumulated in float64)."""
    import torch

    totals = {name: torch.zeros((), dtype=torch.float64) for name in probe.params}
    for grads in passes:  # not under no_grad: the generator's forward passes run in this context
        with torch.no_grad():
            for name, g in grads.items():
                totals[name] += term(probe.params[name], g).double().cpu()
    return {name: float(value) for name, value in totals.items()}


def _summed(units: list[_Unit], per_tensor: dict[str, float]) -> _Scores:
    return _Scores([sum(per_tensor[name] for name in unit.params) for unit in units])


@register("grad-norm", "sum over validation batches of each tensor's gradient L2 norm")
def _grad_norm(probe: _Probe, units: list[_Unit]) -> _Scores:
    return _summed(units, _per_tensor(probe, probe.batch_gradients("grad-norm"), lambda theta, g: g.norm()))


@register("fisher", "empirical Fisher: sum over validation images of the squared per-image gradient")
def _fisher(probe: _Probe, units: list[_Unit]) -> _Scores:
    return _summed(units, _per_tensor(probe, probe.sample_gradients("fisher"), lambda theta, g: g.square().sum()))


@register("taylor", "|θ·∇θL| summed over batches: first-order estimate of the loss change at θ=0")
def _taylor(probe: _Probe, units: list[_Unit]) -> _Scores:
    return _summed(units, _per_tensor(probe, probe.batch_gradients("taylor"), lambda theta, g: (theta * g).sum().abs()))


@register("ablation", f"rise in validation loss with the tensor set to zero (top candidates by {PRESELECT})")
def _ablation(probe: _Probe, units: list[_Unit]) -> _Scores:
    import torch

    cheap = METHODS[PRESELECT].score(probe, units).values
    order = sorted(range(len(units)), key=lambda i: (-(cheap[i] or 0.0), i))
    chosen = order[: probe.candidates]
    base = probe.loss()
    values: list[float | None] = [None] * len(units)
    with probe.reporter.task("ablation", len(chosen)) as task:
        for i in chosen:
            tensors = [probe.params[name] for name in units[i].params]
            saved = [t.detach().clone() for t in tensors]
            try:
                with torch.no_grad():
                    for t in tensors:
                        t.zero_()
                values[i] = probe.loss() - base
            finally:
                with torch.no_grad():
                    for t, old in zip(tensors, saved, strict=True):
                        t.copy_(old)
            task.advance()
    return _Scores(values, [c or 0.0 for c in cheap])


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


def _ranked(units: list[_Unit], scores: _Scores) -> list[SensitivityRow]:
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
    units = _units(model, per)
    probe = _Probe(model, batches, as_reporter(reporter), candidates)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _measuring(model):
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
