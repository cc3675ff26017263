"""The torch modules that get exported: a model with its input stage, and an ensemble's vote.

`Normalise` does exactly the arithmetic of `fastcls.data.loaders.Batches.normalise` (float32
`(x - mean*255) / (std*255)`), so a graph with the preprocessing baked in sees the same numbers
as training and `fastcls predict` did. Every choice (normalise or not, fp16, vote method, TTA)
is fixed when the module is built, so tracing and torch.export see one straight-line graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["EXPORTABLE_VOTES", "EnsembleGraph", "ModelGraph", "Normalise"]

EXPORTABLE_VOTES = ("soft", "weighted", "geometric")  # hard votes settle ties outside any graph
_EPS = 1e-12  # the probability floor of fastcls.studies.ensemble's geometric vote


class Normalise(nn.Module):
    """uint8 (N, 3, S, S) -> float32 normalised, the same operations as Batches.normalise."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("scale", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.shift) / self.scale


class ModelGraph(nn.Module):
    """A classifier's logits in float32, from uint8 pixels (`normalise` given) or from normalised input.

    With `half` the model runs in float16; the normalisation stays in float32 and is cast after.
    """

    def __init__(self, model: nn.Module, normalise: Normalise | None = None, half: bool = False) -> None:
        super().__init__()
        self.model = model.half() if half else model
        self.normalise = normalise
        self.half = half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise is not None:
            x = self.normalise(x)
        if self.half:
            x = x.half()
        return self.model(x).float()


class EnsembleGraph(nn.Module):
    """Members' softmax probabilities, put in the ensemble's class order, then voted.

    The same vote as `fastcls.studies.ensemble.combine` for soft, weighted and geometric (in float32 here,
    float64 there); with `tta` each member averages the image and its horizontal flip, as
    `fastcls ensemble vote --tta` does. Output: (N, classes) probabilities.
    """

    def __init__(
        self,
        members: Sequence[ModelGraph],
        orders: Sequence[Sequence[int]],
        method: str,
        weights: Sequence[float] | None,
        tta: bool,
    ) -> None:
        super().__init__()
        if method not in EXPORTABLE_VOTES:
            raise ValueError(f"method {method!r} is not one of {EXPORTABLE_VOTES}")
        self.members = nn.ModuleList(members)
        for i, order in enumerate(orders):
            self.register_buffer(f"order{i}", torch.tensor(list(order), dtype=torch.long))
        count = len(members)
        w = torch.tensor(list(weights) if weights is not None else [1.0] * count, dtype=torch.float32)
        self.register_buffer("weights", (w / w.sum()).view(count, 1, 1))
        self.method, self.tta = method, tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = []
        for i, member in enumerate(self.members):
            p = member(x).softmax(-1)
            if self.tta:
                p = (p + member(x.flip(-1)).softmax(-1)) / 2
            probs.append(p.index_select(-1, getattr(self, f"order{i}")))
        stacked = torch.stack(probs)
        if self.method == "soft":
            return stacked.mean(0)
        if self.method == "weighted":
            return (stacked * self.weights).sum(0)
        logs = stacked.clamp_min(_EPS).log().mean(0)
        unnormalised = (logs - logs.amax(-1, keepdim=True)).exp()
        return unnormalised / unnormalised.sum(-1, keepdim=True)
