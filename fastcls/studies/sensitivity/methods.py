"""How sensitivity is scored: the units (tensors, modules, layer groups) of a model, the probe that
runs validation batches through it, and the registered scoring methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastcls.errors import ConfigError
from fastcls.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fastcls.reporting import Reporter


__all__ = [
    "METHODS",
    "PER",
    "PRESELECT",
    "Probe",
    "Scores",
    "SensitivityMethod",
    "Unit",
    "measuring",
    "register",
    "units_of",
]


PER = ("tensor", "module", "group")


PRESELECT = "grad-norm"  # the cheap method that picks ablation's candidates


# -- the registry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SensitivityMethod:
    """A named way to score units; `score` returns one value per unit (None: not scored)."""

    name: str
    score: Callable[[Probe, list[Unit]], Scores]
    summary: str


METHODS: Registry[SensitivityMethod] = Registry(
    "sensitivity method", hint="; pass --method grad-norm (or another of them)"
)


def register(name: str, summary: str) -> Callable:
    """Add a method to `METHODS` under `name`: the CLI, the tests and the docs pick it up from there."""

    def decorate(function: Callable[[Probe, list[Unit]], Scores]) -> Callable:
        METHODS.register(name, SensitivityMethod(name, function, summary))
        return function

    return decorate


# -- what is scored -----------------------------------------------------------------------------
@dataclass
class Unit:
    name: str
    params: list[str]  # named_parameters() names
    shape: str
    numel: int
    position: int  # order in the model (forward order for groups)
    group: str = ""


@dataclass
class Scores:
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


def units_of(model: nn.Module, per: str) -> list[Unit]:
    params = dict(model.named_parameters())
    group_of = _group_of(model)
    if per == "tensor":
        return [
            Unit(name, [name], _shape_text(p.shape), p.numel(), i, group_of.get(name, ""))
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
        Unit(
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
def measuring(model: nn.Module) -> Iterator[None]:
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


class Probe:
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
    probe: Probe, passes: Iterator[dict[str, torch.Tensor]], term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> dict[str, float]:
    """Sum `term(theta, grad)` over the passes for each tensor (accumulated in float64)."""
    import torch

    totals = {name: torch.zeros((), dtype=torch.float64) for name in probe.params}
    for grads in passes:  # not under no_grad: the generator's forward passes run in this context
        with torch.no_grad():
            for name, g in grads.items():
                totals[name] += term(probe.params[name], g).double().cpu()
    return {name: float(value) for name, value in totals.items()}


def _summed(units: list[Unit], per_tensor: dict[str, float]) -> Scores:
    return Scores([sum(per_tensor[name] for name in unit.params) for unit in units])


@register("grad-norm", "sum over validation batches of each tensor's gradient L2 norm")
def _grad_norm(probe: Probe, units: list[Unit]) -> Scores:
    return _summed(units, _per_tensor(probe, probe.batch_gradients("grad-norm"), lambda theta, g: g.norm()))


@register("fisher", "empirical Fisher: sum over validation images of the squared per-image gradient")
def _fisher(probe: Probe, units: list[Unit]) -> Scores:
    return _summed(units, _per_tensor(probe, probe.sample_gradients("fisher"), lambda theta, g: g.square().sum()))


@register("taylor", "|θ·∇θL| summed over batches: first-order estimate of the loss change at θ=0")
def _taylor(probe: Probe, units: list[Unit]) -> Scores:
    return _summed(units, _per_tensor(probe, probe.batch_gradients("taylor"), lambda theta, g: (theta * g).sum().abs()))


@register("ablation", f"rise in validation loss with the tensor set to zero (top candidates by {PRESELECT})")
def _ablation(probe: Probe, units: list[Unit]) -> Scores:
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
    return Scores(values, [c or 0.0 for c in cheap])
