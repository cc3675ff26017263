"""The pretraining loop: two views per image, one SSL loss, a cosine LR and target-momentum schedule.

A plain torch loop rather than the classifier's fastai Trainer, which is built around labelled
batches, metrics on a valid split and layer-group phases, none of which SSL has. What it keeps
from training: progress bars, one metrics row per epoch, an exact resume point at every epoch's
end (weights, target network, optimiser, step, every RNG), and SIGINT/SIGTERM ending it cleanly
after the current batch (a second signal stops at once).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from fastcls.pretrain.config import SslConfig
from fastcls.pretrain.data import TwoViews
from fastcls.pretrain.models import SslModel
from fastcls.reporting import Reporter
from fastcls.signals import stop_on_signals

__all__ = ["SslTrainer", "StopSignals", "lr_factor", "make_optimizer", "ssl_step"]


class StopSignals:
    """`reason` becomes "SIGINT"/"SIGTERM" when one arrives; a second one raises KeyboardInterrupt.

    The same contract as the classifier's `StopRequest` callback, without fastai's Callback class.
    """

    def __init__(self) -> None:
        self.reason: str | None = None

    def installed(self) -> AbstractContextManager[None]:
        return stop_on_signals(self)


def make_optimizer(settings: SslConfig, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """SGD (momentum 0.9), lightly's LARS, or AdamW over the parameters that train."""
    if settings.opt == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=settings.wd)
    if settings.opt == "lars":
        from lightly.utils.lars import LARS

        return LARS(params, lr=lr, momentum=0.9, weight_decay=settings.wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=settings.wd)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """lightly's cosine schedule with linear warm-up, as a share of the peak LR (ends at 0.1%)."""
    from lightly.utils.scheduler import cosine_warmup_schedule

    return cosine_warmup_schedule(step, total, 1.0, 0.001, warmup, 0.0)


def ssl_step(model: SslModel, optimizer: torch.optim.Optimizer, x0: torch.Tensor, x1: torch.Tensor, m: float) -> float:
    """One step as lightly's examples take it: momentum update of the target, loss, backward, step."""
    model.momentum_update(m)
    loss = model.loss(x0, x1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@dataclass
class SslTrainer:
    """Trains `model` on `views` for `settings.epochs` epochs; `history` gets one row per epoch.

    `snapshot` is the state after the last finished epoch: what the run saves and resumes from.
    """

    model: SslModel
    views: TwoViews
    settings: SslConfig
    bs: int
    device: torch.device
    reporter: Reporter
    workers: int = 0
    stop_after: int | None = None
    target_network: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    stopped: str | None = None
    diverged: str | None = None
    snapshot: dict[str, Any] | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.drop_last = len(self.views) > self.bs
        self.steps_per_epoch = len(self.views) // self.bs if self.drop_last else 1
        self.total_steps = self.settings.epochs * self.steps_per_epoch
        self.warmup_steps = self.settings.warmup * self.steps_per_epoch
        self.peak_lr = self.settings.base_lr(self.bs)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.settings, params, self.peak_lr)

    # -- resume ---------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything an exact continuation needs, as tensors and plain values (copied)."""
        from fastcls.train.resume import capture_rng

        return {
            "epoch": len(self.history),
            "step": self.step,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "rng": capture_rng(self.generator),
            "history": copy.deepcopy(self.history),
        }

    def restore(self, state: dict[str, Any]) -> None:
        from fastcls.train.resume import restore_rng

        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], self.generator)
        self.step, self.history = int(state["step"]), list(state["history"])
        self.snapshot = state

    # -- training -------------------------------------------------------------------------------
    def momentum(self) -> float:
        from lightly.utils.scheduler import cosine_schedule

        return cosine_schedule(self.step, self.total_steps, self.settings.target_momentum, 1.0)

    def _batches(self) -> torch.utils.data.DataLoader:
        """This epoch's order and one view seed per item, both from the run's generator."""
        order = torch.randperm(len(self.views), generator=self.generator).tolist()
        seeds = torch.randint(0, 2**62, (len(order),), generator=self.generator).tolist()
        return torch.utils.data.DataLoader(
            self.views,
            batch_size=self.bs,
            sampler=list(zip(order, seeds, strict=True)),
            drop_last=self.drop_last,
            num_workers=self.workers,
        )

    def fit(self, signals: StopSignals) -> list[dict[str, Any]]:
        """Train the remaining epochs; stops after `stop_after` epochs, on a signal or a NaN loss."""
        if self.snapshot is None:
            self.snapshot = self.state()
        self.model.to(self.device).train()
        for epoch in range(len(self.history) + 1, self.settings.epochs + 1):
            start, losses = time.perf_counter(), []
            with self.reporter.task(f"epoch {epoch}/{self.settings.epochs}", self.steps_per_epoch) as task:
                for x0, x1 in self._batches():
                    m = self.momentum()
                    for group in self.optimizer.param_groups:
                        group["lr"] = self.peak_lr * lr_factor(self.step, self.total_steps, self.warmup_steps)
                    x0, x1 = x0.to(self.device, non_blocking=True), x1.to(self.device, non_blocking=True)
                    loss = ssl_step(self.model, self.optimizer, x0, x1, m)
                    if not math.isfinite(loss):
                        self.diverged = f"the SSL loss became {loss} in epoch {epoch}"
                        break
                    losses.append(loss)
                    self.step += 1
                    task.advance(status=f"loss {loss:.4f}")
                    if signals.reason is not None:
                        break
            if self.diverged or signals.reason is not None:
                self.stopped = signals.reason
                self.model.load_state_dict(self.snapshot["model"])  # back to the last finished epoch
                break
            row = {
                "epoch": epoch,
                "ssl_loss": sum(losses) / len(losses),
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - start, 2),
            }
            if self.target_network:
                row["target_momentum"] = m
            self.history.append(row)
            self.reporter.table_row(row)
            self.snapshot = self.state()
            if self.on_epoch is not None:
                self.on_epoch(row)
            if self.stop_after is not None and len(self.history) >= self.stop_after and epoch < self.settings.epochs:
                self.stopped = "stop-after"
                break
        self.model.eval()
        return self.history
