"""Head-only phases on cached features: the frozen backbone runs once, each epoch is the head alone.

When every layer group but the head is frozen, the frozen BatchNorm layers are in eval mode, the
backbone has no active dropout or drop-path, and training batches are not augmented (no --aug,
MixUp or CutMix), the backbone is a fixed function of each image. Its output is then computed
once for the train and valid splits, and the phase trains `HeadOnly` on those features: the
same batches in the same seeded order, the same dropout draws, so the head ends as it would
uncached (equal within float rounding; a test checks it), for the price of one forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from fastcls.device import inference_batch
from fastcls.models.heads import HeadSplit

__all__ = ["FeatureBatches", "compute_features", "stochastic_layers"]

_DROP_ATTRIBUTES = ("p", "drop_prob")


def stochastic_layers(model: nn.Module, head: nn.Module) -> list[str]:
    """Names of active dropout / drop-path / stochastic-depth modules outside `head`."""
    inside = {id(m) for m in head.modules()}
    found = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if id(module) in inside or not ("Drop" in kind or "StochasticDepth" in kind):
            continue
        if any(float(getattr(module, attr, 0) or 0) > 0 for attr in _DROP_ATTRIBUTES):
            found.append(name)
    return found


class FeatureBatches:
    """Batches of cached features that replace a loader's image batches one for one: same length,
    same order (drawn from the loader's own generator through `draw_epoch`), same labels."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, loader: Any) -> None:
        self.features, self.labels, self.loader = features, labels, loader
        self.bs, self.device = loader.bs, loader.device

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def generator(self) -> torch.Generator:
        return self.loader.generator

    def __len__(self) -> int:
        return len(self.loader)

    def to(self, device: torch.device | str) -> FeatureBatches:
        return self

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, _ = self.loader.draw_epoch()
        for index in range(len(self)):
            start = index * self.bs
            if order is None:
                yield self.features[start : start + self.bs], self.labels[start : start + self.bs]
            else:
                chosen = order[start : start + self.bs].to(self.features.device)
                yield self.features[chosen], self.labels[chosen]


def compute_features(
    model: nn.Module, split: HeadSplit, loader: Any, precision: str = "fp32", limit_bytes: float = float("inf")
) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(features, labels, seconds) of every image of `loader`, in file order, with the model in eval
    mode and no autograd; under autocast when training uses bf16/fp16, stored as float32.
    None when the features of the whole split would take more than `limit_bytes`, or when some image
    could not be read (a streaming loader drops those from its batches)."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    features, labels = [], []
    run = split.features(model)
    device_type = next(model.parameters()).device.type
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    try:
        with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            for images, targets in loader.in_order(inference_batch(loader.device, loader.bs)):
                features.append(run(images).float())
                labels.append(targets)
                if features[0][0].numel() * 4 * loader.n > limit_bytes:
                    return None
    finally:
        model.train(was_training)
    if sum(len(t) for t in labels) != loader.n:  # a streamed file turned out unreadable: the uncached path skips it
        return None
    return torch.cat(features), torch.cat(labels), time.perf_counter() - start
