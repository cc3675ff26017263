"""Fine-tuning strategies as data: each turns the settings into phases of one-cycle training.

A phase says how many leading layer groups are frozen, for how many epochs, and with which
learning rate per group. A new strategy is one function in `STRATEGIES`.

- `full`: every group trains at one LR.
- `head`: the backbone stays frozen; only the head trains.
- `freeze-to:K`: the first K groups stay frozen throughout.
- `freeze-unfreeze`: fastai's `fine_tune`: head only for `freeze_epochs` (pct_start 0.99), then all
  groups for `epochs` at half the LR, spread geometrically over `lr_mult` (div 5, pct_start 0.3).
- `progressive`: ULMFiT's gradual unfreezing: one more group every `unfreeze_every` epochs, each
  stage its own short cycle, LRs spread over `lr_mult`, until `epochs` are used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastcls.config import TrainConfig, flag
from fastcls.errors import ConfigError
from fastcls.registry import Registry

__all__ = ["STRATEGIES", "Phase", "group_lrs", "parse_strategy", "plan"]


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    frozen: int  # how many leading groups are frozen
    lr: float  # the head's LR; earlier groups get lr / lr_mult ... lr when `spread`
    spread: bool = False
    pct_start: float = 0.25
    div: float = 25.0


def group_lrs(phase: Phase, n_groups: int, lr_mult: float) -> list[float]:
    """One LR per group: geometric from lr/lr_mult (first group) to lr (head), or all equal."""
    if not phase.spread or n_groups == 1:
        return [phase.lr] * n_groups
    low = phase.lr / lr_mult
    step = (phase.lr / low) ** (1 / (n_groups - 1))
    return [low * step**i for i in range(n_groups)]


def _full(s: TrainConfig, n: int, arg: int | None) -> list[Phase]:
    return [Phase("full", s.epochs, 0, s.lr)]


def _head(s: TrainConfig, n: int, arg: int | None) -> list[Phase]:
    return [Phase("head", s.epochs, n - 1, s.lr)]


def _freeze_to(s: TrainConfig, n: int, arg: int | None) -> list[Phase]:
    if arg is None or not 0 <= arg < n:
        raise ConfigError(
            f"freeze-to:K needs K between 0 and {n - 1} for this model ({n} layer groups); "
            f"`fastcls summary {flag('arch')} A` lists them."
        )
    return [Phase(f"freeze-to:{arg}", s.epochs, arg, s.lr)]


def _freeze_unfreeze(s: TrainConfig, n: int, arg: int | None) -> list[Phase]:
    phases = []
    if s.freeze_epochs:
        phases.append(Phase("frozen", s.freeze_epochs, n - 1, s.lr, pct_start=0.99))
    phases.append(Phase("unfrozen", s.epochs, 0, s.lr / 2, spread=True, pct_start=0.3, div=5.0))
    return phases


def _progressive(s: TrainConfig, n: int, arg: int | None) -> list[Phase]:
    phases, used, frozen = [], 0, n - 1
    while used < s.epochs:
        epochs = min(s.unfreeze_every, s.epochs - used)
        name = "head" if frozen == n - 1 else ("all" if frozen == 0 else f"from-group-{frozen}")
        phases.append(Phase(name, epochs, frozen, s.lr, spread=True, pct_start=0.3, div=5.0))
        used += epochs
        frozen = max(0, frozen - 1)
    return phases


STRATEGIES: Registry[Callable[[TrainConfig, int, int | None], list[Phase]]] = Registry(
    "strategy",
    {
        "full": _full,
        "head": _head,
        "freeze-to": _freeze_to,
        "freeze-unfreeze": _freeze_unfreeze,
        "progressive": _progressive,
    },
    hint=" (freeze-to takes :K)",
)


def parse_strategy(text: str) -> tuple[str, int | None]:
    """`freeze-to:3` -> ("freeze-to", 3); names are checked against the registry."""
    name, _, raw = text.partition(":")
    STRATEGIES.check(name)
    if name == "freeze-to":
        if not raw.isdigit():
            raise ConfigError(f"strategy {text!r} needs a group count, e.g. freeze-to:2.")
        return name, int(raw)
    if raw:
        raise ConfigError(f"strategy {name!r} takes no ':{raw}'.")
    return name, None


def plan(settings: TrainConfig, n_groups: int) -> list[Phase]:
    """The phases `settings.strategy` means for a model with `n_groups` layer groups."""
    name, arg = parse_strategy(settings.strategy or "full")
    if n_groups < 2 and name != "full":
        raise ConfigError(f"strategy {name!r} needs a model with a backbone and a head (2+ layer groups).")
    return STRATEGIES[name](settings, n_groups, arg)
