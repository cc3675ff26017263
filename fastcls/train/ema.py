"""`--ema DECAY`: an exponential moving average of the weights (timm's ModelEmaV3), scored each epoch.

The average is updated after every optimiser step with timm's warmup (the decay grows with the
step count towards DECAY), so short fine-tunes get a useful average instead of one stuck at the
initial weights. Each epoch it is scored on the valid split (`ema_valid_loss`, `ema_accuracy`,
`ema_top5` in metrics.csv), saved as the `ema` checkpoint and, when it improves on `--monitor`,
as `best-ema`; `--keep ema|best-ema` ships it. The step count goes into resume.pt, the averaged
weights are the `ema` checkpoint, so a resumed run continues the same average.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from fastai.callback.core import Callback
from torch import nn

__all__ = ["EmaWeights", "score"]


def score(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_func: Callable, top_k: int = 5
) -> dict[str, float]:
    """Mean loss, top-1 and top-k accuracy of `model` over `batches`, in eval mode without gradients."""
    was_training = model.training
    model.eval()
    loss, hit1, hitk, n = 0.0, 0, 0, 0
    try:
        with torch.no_grad():
            for x, y in batches:
                pred = model(x).float()
                loss += float(loss_func(pred, y)) * len(y)
                top = pred.topk(min(top_k, pred.shape[-1]), dim=-1).indices
                hit1 += int((top[:, :1] == y.view(-1, 1)).sum())
                hitk += int((top == y.view(-1, 1)).any(dim=1).sum())
                n += len(y)
    finally:
        model.train(was_training)
    n = max(n, 1)
    return {"valid_loss": loss / n, "accuracy": hit1 / n, "top5": hitk / n}


class EmaWeights(Callback):
    """Keeps the average, scores it after each epoch and hands the scores to the epoch log."""

    order = 59  # after validation, before EpochLog (60) writes the epoch's row

    def __init__(
        self,
        model: nn.Module,
        decay: float,
        evaluate: Callable[[nn.Module], dict[str, float]],
        pending: dict[str, Any],
    ) -> None:
        from timm.utils import ModelEmaV3

        self.network, self.evaluate, self.pending = model, evaluate, pending
        self.average = ModelEmaV3(model, decay=decay, use_warmup=True)
        self.steps = 0

    @property
    def module(self) -> nn.Module:
        return self.average.module

    def restore(self, state: dict[str, torch.Tensor], steps: int) -> None:
        self.module.load_state_dict(state)
        self.steps = steps

    def after_step(self) -> None:
        self.steps += 1
        self.average.update(self.network, step=self.steps)

    def after_epoch(self) -> None:
        scores = self.evaluate(self.module)
        self.pending.update({f"ema_{key}": value for key, value in scores.items()})
