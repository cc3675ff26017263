"""fastai callbacks that own training's side effects: the epoch log (metrics.csv) and progress.

The function that trains only builds the Learner and calls fit; everything a person or a file
sees during training comes from here.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from fastai.callback.core import Callback

from fastcls.reporting import Reporter
from fastcls.runs import write_metrics

__all__ = ["EpochLog", "ProgressBars"]


class EpochLog(Callback):
    """Exact per-epoch metrics (mean train loss, valid loss, accuracy, top-5, lr, seconds).

    Computed here from every batch rather than from fastai's smoothed loss, appended to
    `history`, and rewritten to `metrics.csv` after each epoch when `path` is set.
    """

    order = 60

    def __init__(self, history: list[dict[str, Any]], path: Path | None = None, top_k: int = 5) -> None:
        self.history, self.path, self.top_k = history, path, top_k

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
        s = self._sums
        valid_n = max(s["valid_n"], 1)
        row = {
            "epoch": len(self.history) + 1,
            "train_loss": s["train_loss"] / max(s["train_n"], 1),
            "valid_loss": s["valid_loss"] / valid_n,
            "accuracy": s["hit1"] / valid_n,
            "top5": s["hitk"] / valid_n,
            "lr": float(self.learn.opt.hypers[-1]["lr"]),
            "seconds": round(time.perf_counter() - self._start, 3),
        }
        if not all(torch.isfinite(torch.tensor([row["train_loss"], row["valid_loss"]]))):
            row["note"] = "non-finite loss"
        self.history.append(row)
        if self.path is not None:
            write_metrics(self.path, self.history)


class ProgressBars(Callback):
    """A bar per epoch over train and valid batches, then one row of the epoch table."""

    order = 70

    def __init__(self, reporter: Reporter, history: list[dict[str, Any]]) -> None:
        self.reporter, self.history = reporter, history

    def before_epoch(self) -> None:
        self._stack = ExitStack()
        total = len(self.dls.train) + len(self.dls.valid)
        self._task = self._stack.enter_context(
            self.reporter.task(f"epoch {self.epoch + 1}/{self.n_epoch}", total)
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
