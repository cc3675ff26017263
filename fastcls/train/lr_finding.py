"""What the LR range test found: the loss-vs-LR curve and fastai's four suggestions, one of them picked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LRFindResult", "suggest_lrs"]


@dataclass
class LRFindResult:
    """The LR finder's curve, every suggestion, and the one picked."""

    lrs: list[float]
    losses: list[float]
    suggestions: dict[str, float]
    points: dict[str, tuple[float, float]] = field(default_factory=dict)
    suggest: str = "valley"

    @property
    def lr(self) -> float:
        return self.suggestions[self.suggest]


def suggest_lrs(recorder: Any, num_it: int, suggest: str) -> LRFindResult:
    """fastai's valley, steep, minimum and slide suggestions from a finished sweep's recorder (its first
    tenth and last five steps left out, as fastai's own lr_find does, and NaN losses dropped)."""
    from fastai.callback.schedule import minimum, slide, steep, valley

    lrs = torch.tensor(recorder.lrs[num_it // 10 : -5], dtype=torch.float64)
    losses = torch.tensor([float(x) for x in recorder.losses[num_it // 10 : -5]], dtype=torch.float64)
    keep = ~torch.isnan(losses)
    lrs, losses = lrs[keep], losses[keep]
    suggestions, points = {}, {}
    for name, func in (("valley", valley), ("steep", steep), ("minimum", minimum), ("slide", slide)):
        value, point = func(lrs, losses, num_it)
        suggestions[name], points[name] = float(value), (float(point[0]), float(point[1]))
    return LRFindResult(lrs.tolist(), losses.tolist(), suggestions, points, suggest)
