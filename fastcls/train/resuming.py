"""Callbacks that make `--resume` exact: the resume point written after every epoch, and the fp16 grad
scaler state put back when training continues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from fastai.callback.core import Callback

from fastcls.train.batchnorm import RestartBatchNormStats
from fastcls.train.resume import CHECKPOINT_EPOCHS, RESUME_FILE, capture_rng, write_state

__all__ = ["ResumePoint", "ScalerState"]


class ResumePoint(Callback):
    """After every epoch, writes `checkpoints/resume.pt`: the optimiser state, every RNG, the grad
    scaler, the BatchNorm-restart flag and each checkpoint's epoch, so `--resume` continues exactly
    (weights are in `last`). Written last, it completes the epoch: then the epoch's checkpoints are
    published."""

    order = 66  # after Checkpoints has stored `last`

    def __init__(
        self,
        history: list[dict[str, Any]],
        folder: Path | None,
        generator: torch.Generator,
        restart: RestartBatchNormStats | None,
    ) -> None:
        self.history, self.folder, self.generator, self.restart = history, folder, generator, restart
        self.ema: Any = None  # EmaWeights, with --ema: its step count is part of the state
        self.share: Any = None  # data-parallel: every rank's RNG states, gathered on every rank (collective)

    def state(self) -> dict[str, Any]:
        scaler = getattr(self.learn, "scaler", None)
        return {
            "epoch": len(self.history),
            "optimizer": self.learn.opt.state_dict(),
            "rng": capture_rng(self.generator),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "restart_pending": self.restart.pending if self.restart is not None else False,
            "ema_steps": self.ema.steps if self.ema is not None else 0,
            CHECKPOINT_EPOCHS: dict(self.learn.checkpoints.epochs) if hasattr(self.learn, "checkpoints") else {},
        }

    def after_epoch(self) -> None:
        ranks = self.share() if self.share is not None else {}  # every rank takes part, writer or not
        if self.folder is None:
            return
        write_state(self.folder / RESUME_FILE, self.state() | ranks)
        if hasattr(self.learn, "checkpoints"):  # fastai's attribute for the Checkpoints callback
            self.learn.checkpoints.publish()


class ScalerState(Callback):
    """Resume with fp16: load the grad scaler's state once fastai's MixedPrecision has made the scaler."""

    order = 11  # MixedPrecision (10) creates `learn.scaler` in before_fit

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def before_fit(self) -> None:
        scaler = getattr(self.learn, "scaler", None)
        if scaler is not None:
            scaler.load_state_dict(self.state)
