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
from fastcls.registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULES", "check_optim", "no_decay_params", "opt_func", "schedule"]

NoDecay = frozenset[int]  # ids of the parameters that get no weight decay


def no_decay_params(model: torch.nn.Module) -> NoDecay:
    """Biases, norm layers (every 1-d tensor), embeddings and the model's own `no_weight_decay()`
    tokens (ViT's pos_embed, cls_token): timm's `param_groups_weight_decay` rule, which is also
    fastai's default (`wd_bn_bias=False`) and what timm's and most papers' recipes use."""
    from timm.optim import param_groups_weight_decay

    listed = model.no_weight_decay() if callable(getattr(model, "no_weight_decay", None)) else ()
    groups = param_groups_weight_decay(model, 1.0, no_weight_decay_list=listed)
    ids = {id(p) for group in groups if group["weight_decay"] == 0 for p in group["params"]}
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            ids.add(id(module.weight))
    return frozenset(ids)


def _decay_pairs(layer_groups: list[list[torch.nn.Parameter]], no_decay: NoDecay) -> list[dict[str, Any]]:
    """Two torch param groups per layer group: [decayed, not decayed]."""
    groups = []
    for params in layer_groups:
        groups.append({"params": [p for p in params if id(p) not in no_decay]})
        groups.append({"params": [p for p in params if id(p) in no_decay]})
    return groups


def _wrapper_class():
    from fastai.optimizer import OptimWrapper, detuplify_pg, set_item_pg

    class DecayPairs(OptimWrapper):
        """fastai's OptimWrapper over a torch optimiser whose param groups come in pairs, one pair per
        layer group: fastai sees (and freezes, schedules, logs) layer groups, torch sees each layer
        group's decayed and not-decayed halves, and the second half's weight decay stays 0."""

        def __init__(self, params: list, opt: type[torch.optim.Optimizer], no_decay: NoDecay, **kwargs: Any):
            layer_groups = [list(group) for group in params] if isinstance(params[0], list | tuple) else [list(params)]
            super().__init__(opt=opt(_decay_pairs(layer_groups, no_decay), **kwargs))
            self.no_decay = no_decay

        @property
        def _pairs(self) -> list[tuple[dict, dict]]:
            groups = self.opt.param_groups
            return list(zip(groups[::2], groups[1::2], strict=True))

        @property
        def hypers(self) -> list[dict[str, Any]]:
            return [
                {self.fwd_map.get(k, k): v for k, v in detuplify_pg(decayed).items() if k != "params"}
                for decayed, _ in self._pairs
            ]

        def _set_hyper(self, k: str, v: list) -> None:
            for (decayed, plain), value in zip(self._pairs, v, strict=True):
                set_item_pg(decayed, self.bwd_map[k], value)
                set_item_pg(plain, self.bwd_map[k], 0.0 if k == "wd" else value)

        @property
        def param_lists(self) -> list[list[torch.nn.Parameter]]:
            return [decayed["params"] + plain["params"] for decayed, plain in self._pairs]

        @param_lists.setter
        def param_lists(self, value: list[list[torch.nn.Parameter]]) -> None:
            for (decayed, plain), params in zip(self._pairs, value, strict=True):
                decayed["params"] = [p for p in params if id(p) not in self.no_decay]
                plain["params"] = [p for p in params if id(p) in self.no_decay]

    return DecayPairs


def _torch(kind: type[torch.optim.Optimizer], s: TrainConfig, no_decay: NoDecay) -> Callable:
    extra = {"momentum": s.momentum} if kind is torch.optim.SGD else {"eps": s.eps}
    return partial(_wrapper_class(), opt=kind, no_decay=no_decay, **extra)


def _fastai(name: str, s: TrainConfig, no_decay: NoDecay) -> Callable:
    """fastai's own optimisers read a per-parameter `do_wd` flag; it is set for the no-decay set."""
    from fastai import optimizer

    make = partial(getattr(optimizer, name), mom=s.momentum, eps=s.eps)

    def build(params: Any, **kwargs: Any) -> Any:
        opt = make(params, **kwargs)
        for group in opt.param_lists:
            for p in group:
                if id(p) in no_decay:
                    opt.state[p]["do_wd"] = False
        return opt

    return build


OPTIMIZERS: Registry[Callable[[TrainConfig, NoDecay], Callable]] = Registry("opt", {
    "adamw": lambda s, nd: _torch(torch.optim.AdamW, s, nd),
    "adam": lambda s, nd: _torch(torch.optim.Adam, s, nd),
    "sgd": lambda s, nd: _torch(torch.optim.SGD, s, nd),
    "lamb": lambda s, nd: _fastai("Lamb", s, nd),
    "ranger": lambda s, nd: _fastai("ranger", s, nd),
})  # fmt: skip


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


SCHEDULES: Registry[Callable[..., dict[str, Any]]] = Registry("sched", {
    "one-cycle": _one_cycle,
    "cosine": _cosine,
    "flat-cos": _flat_cos,
    "step": _step,
})  # fmt: skip


def check_optim(s: TrainConfig) -> None:
    """Unknown optimiser or schedule names fail before any data is read."""
    OPTIMIZERS.check(s.opt)
    SCHEDULES.check(s.sched)


def opt_func(s: TrainConfig, no_decay: NoDecay = frozenset()) -> Callable:
    """fastai's `opt_func`: called with the layer groups (and lr), builds the optimiser."""
    return OPTIMIZERS[s.opt](s, no_decay)


def schedule(s: TrainConfig, n_epoch: int, lrs: list[float], pct_start: float, div: float) -> dict[str, Any]:
    """fastai ParamScheduler schedules for one phase; per-group LRs are arrays."""
    scheds = SCHEDULES[s.sched](n_epoch, np.array(lrs), s, pct_start, div)
    return scheds
