"""The fastai callbacks of data-parallel training (`fastcls.train.distributed` has the World they use):
DistributedDataParallel for training batches only, and stops that every rank agrees on."""

from __future__ import annotations

import signal
from typing import Any

import torch
import torch.distributed as dist
from fastai.callback.core import Callback, CancelFitException
from torch import nn

from fastcls.train.distributed import World

__all__ = ["DataParallel", "StepTogether"]

_SIGNALS = ("SIGINT", "SIGTERM")


class DataParallel(Callback):
    """Training batches run through torch's DistributedDataParallel (gradients all-reduced during
    backward); validation runs the plain module, after rank 0's buffers (BatchNorm running
    statistics) are copied to every rank, so all validate the weights rank 0 checkpoints and no
    collective waits on a rank whose valid share has fewer batches."""

    order = -20  # before TrainEvalCallback (-10) puts the wrapper in train or eval mode

    def __init__(self, world: World) -> None:
        self.world = world
        self.plain: nn.Module | None = None
        self.wrapped: nn.Module | None = None

    def before_fit(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.plain = self.learn.model  # the model, or the head alone on cached features
        ids = [self.world.device.index] if self.world.device.type == "cuda" else None
        trains = any(p.requires_grad for p in self.plain.parameters())
        self.wrapped = DistributedDataParallel(self.plain, device_ids=ids) if trains else self.plain
        self.learn.model = self.wrapped

    def before_train(self) -> None:
        self.learn.model = self.wrapped

    def before_validate(self) -> None:
        for buffer in self.plain.buffers():
            dist.broadcast(buffer, 0)
        self.learn.model = self.plain

    def after_fit(self) -> None:
        if self.plain is not None:
            self.learn.model = self.plain
        self.wrapped = None


def _signal_code(reason: str | None) -> int:
    return int(signal.Signals[reason]) if reason in _SIGNALS else 0


class StepTogether(Callback):
    """Stops that depend on one rank are agreed by all: after every training loss (before backward)
    the ranks exchange whether their loss is finite and whether a signal arrived; at each epoch's
    end and each fit's end, whether a signal arrived. Any rank's NaN or signal stops every rank at
    the same point, with the same NanGuard message or StopRequest reason."""

    order = 4  # before NanGuard (5), which then never sees a NaN the ranks did not agree on

    def __init__(self, world: World, history: list[dict[str, Any]], nan_guard: Any, stop: Any) -> None:
        self.world, self.history, self.nan_guard, self.stop = world, history, nan_guard, stop

    def _agree_signal(self, codes: torch.Tensor) -> bool:
        raised = [int(c) for c in codes.tolist() if c]
        if raised and self.stop.reason not in _SIGNALS:
            self.stop.reason = signal.Signals(raised[0]).name
        return bool(raised)

    def after_loss(self) -> None:
        if not self.training:
            return
        loss = self.learn.loss_grad.detach()
        bad = not bool(torch.isfinite(loss).all())
        value = float(loss.float().mean()) if bad else 0.0
        rows = self.world.gather([float(bad), value, _signal_code(self.stop.reason)])
        failed = [rank for rank, flag in enumerate(rows[:, 0].tolist()) if flag]
        if failed:
            where = f"epoch {len(self.history) + 1}, batch {self.iter + 1}"
            value = float(rows[failed[0], 1])
            self.nan_guard.message = (
                f"the training loss became {value} at {where} on process {failed[0]} of {self.world.size}"
            )
            raise CancelFitException()
        if self._agree_signal(rows[:, 2]):
            raise CancelFitException()

    def after_epoch(self) -> None:
        if self._agree_signal(self.world.gather([_signal_code(self.stop.reason)])[:, 0]):
            raise CancelFitException()  # before EpochLog: a signal in validation cancels the epoch, as in one process

    def after_fit(self) -> None:
        self._agree_signal(self.world.gather([_signal_code(self.stop.reason)])[:, 0])
