"""Optimisers and LR schedules as registries: a new one is one entry, tested from the registry.

Optimisers: torch's own AdamW, Adam and SGD through fastai's OptimWrapper (so a step costs what a
hand-written loop's does), fastai's Lamb and Ranger. Schedules run inside each strategy phase:
`one-cycle` (fastai fit_one_cycle), `cosine` (cosine annealing from the LR to LR/1e5),
`flat-cos` (fastai fit_flat_cos: flat for 75%, then cosine), `step` (multiply by `gamma` every
`step_size` epochs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from fastcls.config import TrainConfig
from fastcls.errors import ConfigError, did_you_mean

__all__ = ["OPTIMIZERS", "SCHEDULES", "check_optim", "opt_func", "schedule"]


def _torch(kind: type[torch.optim.Optimizer], s: TrainConfig, **extra: Any) -> Callable:
    from fastai.optimizer import OptimWrapper

    return (
        partial(OptimWrapper, opt=kind, eps=s.eps, **extra)
        if kind is not torch.optim.SGD
        else partial(OptimWrapper, opt=kind, momentum=s.momentum, **extra)
    )


def _fastai(name: str, s: TrainConfig) -> Callable:
    from fastai import optimizer

    return partial(getattr(optimizer, name), mom=s.momentum, eps=s.eps)


OPTIMIZERS: dict[str, Callable[[TrainConfig], Callable]] = {
    "adamw": lambda s: _torch(torch.optim.AdamW, s),
    "adam": lambda s: _torch(torch.optim.Adam, s),
    "sgd": lambda s: _torch(torch.optim.SGD, s),
    "lamb": lambda s: _fastai("Lamb", s),
    "ranger": lambda s: _fastai("ranger", s),
}


def _one_cycle(n: int, lrs: np.ndarray, s: TrainConfig, pct_start: float, div: float) -> dict[str, Any]:
    from fastai.callback.schedule import combined_cos

    return {
        "lr": combined_cos(pct_start, lrs / div, lrs, lrs / 1e5),
        "mom": combined_cos(pct_start, 0.95, 0.85, 0.95),  # fastai's one-cycle momentum, all optimisers
    }


def _cosine(n: int, lrs: np.ndarray, s: TrainConfig, pct_start: float, div: float) -> dict[str, Any]:
    from fastai.callback.schedule import SchedCos

    return {"lr": SchedCos(lrs, lrs / 1e5)}


def _flat_cos(n: int, lrs: np.ndarray, s: TrainConfig, pct_start: float, div: float) -> dict[str, Any]:
    from fastai.callback.schedule import combined_cos

    return {"lr": combined_cos(0.75, lrs, lrs, lrs / 1e5)}


def _step(n: int, lrs: np.ndarray, s: TrainConfig, pct_start: float, div: float) -> dict[str, Any]:
    size = s.step_size or max(1, n // 3)

    def lr_at(pos: float) -> np.ndarray:
        epoch = math.floor(pos * n + 1e-9)
        return lrs * s.gamma ** (epoch // size)

    return {"lr": lr_at}


SCHEDULES: dict[str, Callable[..., dict[str, Any]]] = {
    "one-cycle": _one_cycle,
    "cosine": _cosine,
    "flat-cos": _flat_cos,
    "step": _step,
}


def check_optim(s: TrainConfig) -> None:
    """Unknown optimiser or schedule names fail before any data is read."""
    for what, value, table in (("opt", s.opt, OPTIMIZERS), ("sched", s.sched, SCHEDULES)):
        if value not in table:
            raise ConfigError(f"{what} {value!r} is not one of {', '.join(table)}.{did_you_mean(value, table)}")


def opt_func(s: TrainConfig) -> Callable:
    return OPTIMIZERS[s.opt](s)


def schedule(s: TrainConfig, n_epoch: int, lrs: list[float], pct_start: float, div: float) -> dict[str, Any]:
    """fastai ParamScheduler schedules for one phase; per-group LRs are arrays."""
    scheds = SCHEDULES[s.sched](n_epoch, np.array(lrs), s, pct_start, div)
    return scheds
