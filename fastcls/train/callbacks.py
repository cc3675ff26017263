"""fastai callbacks that own training's side effects: the epoch log (metrics.csv) and progress.

The function that trains only builds the Learner and calls fit; everything a person or a file
sees during training comes from here.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import torch
from fastai.callback.core import Callback, CancelFitException, CancelValidException
from fastai.callback.schedule import ParamScheduler, SchedExp
from torch import nn

from fastcls.reporting import Reporter
from fastcls.runs import write_metrics
from fastcls.signals import stop_on_signals

__all__ = [
    "Autocast",
    "BoostClip",
    "Checkpoints",
    "EarlyStop",
    "EpochLog",
    "LRSweep",
    "NanGuard",
    "PhaseSchedule",
    "ProgressBars",
    "StopRequest",
]


class EpochLog(Callback):
    """Exact per-epoch metrics (mean train loss, valid loss, accuracy, top-5, lr, seconds).

    Computed here from every batch rather than from fastai's smoothed loss, appended to
    `history`, and rewritten to `metrics.csv` after each epoch when `path` is set. `phase` is set
    by the trainer; `group_lrs` lists each layer group's LR at the epoch's end (0 when frozen).
    """

    order = 60

    def __init__(
        self,
        history: list[dict[str, Any]],
        path: Path | None = None,
        top_k: int = 5,
    ) -> None:
        self.history, self.path, self.top_k = history, path, top_k
        self.phase = "full"
        self.head_index = -1  # the head's optimiser group (the boosted group, when there is one, is after it)
        self.pending: dict[str, Any] = {}  # columns other callbacks computed for this epoch (e.g. the EMA's scores)
        self.reduce: Any = None  # data-parallel: adds the sums up over every rank (fastcls.train.distributed)

    def before_epoch(self) -> None:
        self._start = time.perf_counter()
        self._sums = {
            "train_loss": 0.0,
            "train_n": 0,
            "valid_loss": 0.0,
            "valid_n": 0,
            "hit1": 0,
            "hitk": 0,
        }

    def after_batch(self) -> None:
        n = self.yb[0].shape[0]
        loss = float(self.learn.loss.detach())
        if self.training:
            self._sums["train_loss"] += loss * n
            self._sums["train_n"] += n
            return
        self._sums["valid_loss"] += loss * n
        self._sums["valid_n"] += n
        k = min(self.top_k, self.pred.shape[-1])
        top = self.pred.topk(k, dim=-1).indices
        target = self.yb[0].view(-1, 1)
        self._sums["hit1"] += int((top[:, :1] == target).sum())
        self._sums["hitk"] += int((top == target).any(dim=1).sum())

    def after_epoch(self) -> None:
        s = self.reduce(self._sums) if self.reduce is not None else self._sums
        valid_n = max(s["valid_n"], 1)
        frozen = getattr(self.learn.opt, "frozen_idx", 0)
        lrs = [0.0 if i < frozen else float(h["lr"]) for i, h in enumerate(self.learn.opt.hypers)]
        row = {
            "epoch": len(self.history) + 1,
            "phase": self.phase,
            "train_loss": s["train_loss"] / max(s["train_n"], 1),
            "valid_loss": s["valid_loss"] / valid_n,
            "accuracy": s["hit1"] / valid_n,
            "top5": s["hitk"] / valid_n,
            "lr": float(self.learn.opt.hypers[self.head_index]["lr"]),
            "seconds": round(time.perf_counter() - self._start, 3),
            "group_lrs": ";".join(f"{lr:.3g}" for lr in lrs),
        }
        row.update(self.pending)
        self.pending.clear()
        if not all(torch.isfinite(torch.tensor([row["train_loss"], row["valid_loss"]]))):
            row["note"] = "non-finite loss"
        self.history.append(row)
        if self.path is not None:
            write_metrics(self.path, self.history)


class ProgressBars(Callback):
    """A bar per epoch over train and valid batches, then one row of the epoch table."""

    order = 70

    def __init__(self, reporter: Reporter, history: list[dict[str, Any]], total_epochs: int) -> None:
        self.reporter, self.history, self.total_epochs = reporter, history, total_epochs

    def before_epoch(self) -> None:
        self._stack = ExitStack()
        total = len(self.dls.train) + len(self.dls.valid)
        self._task = self._stack.enter_context(
            self.reporter.task(f"epoch {len(self.history) + 1}/{self.total_epochs}", total)
        )

    def after_batch(self) -> None:
        if self.reporter.mode != "rich":
            return
        status = f"loss {float(self.learn.loss.detach()):.4f}" if self.training else "validating"
        self._task.advance(status=status)

    def after_epoch(self) -> None:
        self._stack.close()
        if self.history:
            self.reporter.table_row(self.history[-1])

    def after_fit(self) -> None:
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack.close()


class LRSweep(ParamScheduler):
    """fastai's LR range test without its save/load to disk: the LR grows exponentially each
    batch until `num_it` batches or the loss diverges; the caller restores the model."""

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100) -> None:
        super().__init__({"lr": SchedExp(start_lr, end_lr)})
        self.num_it = max(num_it, 6)

    def before_fit(self) -> None:
        super().before_fit()
        self.best_loss = float("inf")

    def before_batch(self) -> None:
        self._update_val(self.train_iter / self.num_it)

    def after_batch(self) -> None:
        super().after_batch()
        loss = float(self.smooth_loss)
        if loss < self.best_loss:
            self.best_loss = loss
        if loss > 4 * self.best_loss or not torch.isfinite(torch.tensor(loss)) or self.train_iter >= self.num_it:
            raise CancelFitException()

    def before_validate(self) -> None:
        raise CancelValidException()

    def after_fit(self) -> None:
        self.learn.opt.zero_grad()


class Checkpoints(Callback):
    """After every epoch: `last`, and `best-valid_loss` / `best-accuracy` when they improve.

    The two bests can differ (a lower loss is not always a higher accuracy), so both are kept, in
    memory and, when `folder` is set, as `checkpoints/<name>.safetensors` (written atomically, with
    the epoch in the metadata). An epoch's files are first written under pending names and put in
    place by `publish()`, which ResumePoint calls once resume.pt records the epoch (see
    fastcls.train.resume), so a kill never leaves checkpoints of an epoch resume.pt does not know.
    """

    order = 65  # after EpochLog has written the epoch's row

    def __init__(
        self, history: list[dict[str, Any]], folder: Path | None, model: nn.Module, monitor: str = "valid_loss"
    ) -> None:
        self.history, self.folder, self.network = history, folder, model  # the whole model, also while
        self.states: dict[str, dict[str, torch.Tensor]] = {}  # a head-only phase trains `learn.model`
        self.epochs: dict[str, int] = {}
        self.monitor = monitor
        self.ema: nn.Module | None = None  # the averaged model, with --ema: checkpoints `ema` and `best-ema`
        self.pending: list[str] = []

    def _store(self, name: str, row: dict[str, Any], model: nn.Module | None = None) -> None:
        model = model if model is not None else self.network
        state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        self.states[name], self.epochs[name] = state, row["epoch"]
        self.write(name, pending=True)

    def write(self, name: str, pending: bool = False) -> None:
        """Write checkpoint `name` to `folder/<name>.safetensors` (atomically), when there is a folder;
        `pending`: under its pending name, until `publish()`."""
        if self.folder is not None:
            from safetensors.torch import save

            from fastcls.runs import atomic_write_bytes
            from fastcls.train.resume import pending_checkpoint

            epoch = self.epochs[name]
            file = pending_checkpoint(name, epoch) if pending else f"{name}.safetensors"
            atomic_write_bytes(self.folder / file, save(self.states[name], metadata={"epoch": str(epoch)}))
            if pending:
                self.pending.append(name)

    def publish(self) -> None:
        """Rename the pending checkpoints into place (their epoch is recorded in resume.pt)."""
        import os

        from fastcls.train.resume import pending_checkpoint

        for name in self.pending:
            os.replace(self.folder / pending_checkpoint(name, self.epochs[name]), self.folder / f"{name}.safetensors")
        self.pending.clear()

    def after_epoch(self) -> None:
        row = self.history[-1]
        self._store("last", row)
        bests = [("best-valid_loss", "valid_loss", min, None), ("best-accuracy", "accuracy", max, None)]
        if self.ema is not None:
            self._store("ema", row, self.ema)
            bests.append(("best-ema", f"ema_{self.monitor}", min if self.monitor == "valid_loss" else max, self.ema))
        for name, key, better, model in bests:
            seen = [r[key] for r in self.history]
            if better(seen) == row[key] and seen.index(row[key]) == len(seen) - 1:
                self._store(name, row, model)

    def after_fit(self) -> None:
        self.publish()  # without a ResumePoint nothing else would


class EarlyStop(Callback):
    """Stops when `monitor` has not improved for `patience` epochs; the trainer skips later phases."""

    order = 75  # after the epoch's checkpoints and its row in the progress table

    def __init__(self, monitor: str, patience: int, history: list[dict[str, Any]]) -> None:
        self.monitor, self.patience, self.history = monitor, patience, history
        self.best: float | None = None
        self.waited = 0
        self.stopped = False

    def update(self, value: float) -> bool:
        """Feed one epoch's value; True when training should stop."""
        improved = self.best is None or (value < self.best if self.monitor == "valid_loss" else value > self.best)
        if improved:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        self.stopped = self.waited >= self.patience
        return self.stopped

    def after_epoch(self) -> None:
        if self.update(self.history[-1][self.monitor]):
            raise CancelFitException()


class NanGuard(Callback):
    """Stops at the first training batch whose loss is NaN or infinite and says where."""

    order = 5

    def __init__(self, history: list[dict[str, Any]]) -> None:
        self.history = history
        self.message: str | None = None

    def after_loss(self) -> None:
        if self.training and not bool(torch.isfinite(self.learn.loss_grad.detach()).all()):
            where = f"epoch {len(self.history) + 1}, batch {self.iter + 1}"
            self.message = f"the training loss became {float(self.learn.loss_grad)} at {where}"
            raise CancelFitException()


class Autocast(Callback):
    """bfloat16 autocast for forward and loss on any device (fastai's MixedPrecision is CUDA-only);
    no gradient scaler is needed, bf16 has fp32's range. Predictions return to fp32."""

    order = 10

    def __init__(self, device_type: str, dtype: torch.dtype = torch.bfloat16) -> None:
        self.device_type, self.dtype = device_type, dtype

    def before_batch(self) -> None:
        self._context = torch.autocast(self.device_type, dtype=self.dtype)
        self._context.__enter__()

    def after_pred(self) -> None:
        self.learn.pred = self.pred.float()

    def after_loss(self) -> None:
        self._context.__exit__(None, None, None)

    def after_cancel_batch(self) -> None:
        self.after_loss()


class PhaseSchedule(ParamScheduler):
    """fastai's ParamScheduler positioned by training batches done / planned in the phase.

    fastai's own position restarts at 0 with every `fit`; counting batches from `done` lets a
    phase resumed at epoch k continue on exactly the same curve as the uninterrupted run.
    """

    def __init__(self, scheds: dict[str, Any], total: int, done: int = 0) -> None:
        super().__init__(scheds)
        self.total, self.done = max(total, 1), done

    def before_batch(self) -> None:
        self._update_val(self.done / self.total)

    def after_batch(self) -> None:
        super().after_batch()
        self.done += 1


class StopRequest(Callback):
    """Ends training cleanly: after epoch `stop_after` (`--stop-after`), or after the current batch
    when SIGINT (Ctrl-C) or SIGTERM arrives. A second signal stops at once (KeyboardInterrupt).

    `reason` says why it stopped ("stop-after", "SIGINT", "SIGTERM"); None when it did not. With
    `collective` (data-parallel) a signal only cuts validation short on this rank: the ranks agree
    when to stop training (fastcls.train.distributed.StepTogether).
    """

    order = 80  # after the epoch's checkpoints, resume point and progress row

    def __init__(self, history: list[dict[str, Any]], stop_after: int | None = None) -> None:
        self.history, self.stop_after = history, stop_after
        self.reason: str | None = None
        self.collective = False

    def signals(self) -> AbstractContextManager[None]:
        """Install the SIGINT/SIGTERM handlers for the duration of training (main thread only)."""
        return stop_on_signals(self)

    def after_batch(self) -> None:
        if self.reason is None:
            return
        if not self.collective:
            raise CancelFitException()
        if not self.training:
            raise CancelValidException()

    def after_epoch(self) -> None:
        if self.stop_after is not None and len(self.history) >= self.stop_after and self.reason is None:
            self.reason = "stop-after"
            raise CancelFitException()


class BoostClip(Callback):
    """`--boost-clip N`: the boosted tensors' gradients together are clipped to norm N before each step."""

    order = 20

    def __init__(self, params: list[nn.Parameter], max_norm: float) -> None:
        self.params, self.max_norm = params, max_norm

    def before_step(self) -> None:
        nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], self.max_norm)
