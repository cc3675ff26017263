"""Build a fastai Learner over in-memory batches and fit it with the one-cycle schedule.

AdamW is torch's own (through fastai's OptimWrapper), which keeps the per-step cost equal to a
hand-written loop; fastai supplies the schedule, the callback system and the training loop.
"""

from __future__ import annotations

import random
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcls.config import TrainConfig
from fastcls.data.loaders import Batches
from fastcls.reporting import Reporter

__all__ = ["fit_one_cycle", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs, so a CPU run repeats exactly for a fixed seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _import_fastai():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation noise inside fastai
        import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
        from fastai.data.core import DataLoaders
        from fastai.learner import Learner
        from fastai.optimizer import OptimWrapper
    return Learner, DataLoaders, OptimWrapper


def build_learner(model: nn.Module, train: Batches, valid: Batches, callbacks: list[Any]):
    """A fastai Learner with torch's AdamW, cross-entropy, and fastcls's own callbacks only."""
    Learner, DataLoaders, OptimWrapper = _import_fastai()
    learn = Learner(
        DataLoaders(train, valid),
        model,
        loss_func=nn.CrossEntropyLoss(),
        opt_func=partial(OptimWrapper, opt=torch.optim.AdamW),
        cbs=callbacks,
    )
    for name in ("progress", "ProgressCallback"):
        if hasattr(learn, name):
            learn.remove_cb(getattr(learn, name))
    return learn


def fit_one_cycle(
    model: nn.Module,
    train: Batches,
    valid: Batches,
    settings: TrainConfig,
    reporter: Reporter,
    metrics_path: Path | None = None,
) -> list[dict[str, Any]]:
    """Train `model` in place; return one metrics row per epoch (also written to `metrics_path`)."""
    from fastcls.train.callbacks import EpochLog, ProgressBars

    history: list[dict[str, Any]] = []
    callbacks = [EpochLog(history, metrics_path)]
    if reporter.mode != "quiet":
        callbacks.append(ProgressBars(reporter, history))
    learn = build_learner(model, train, valid, callbacks)
    with learn.no_logging():
        learn.fit_one_cycle(settings.epochs, settings.lr, wd=settings.wd)
    model.eval()
    return history
