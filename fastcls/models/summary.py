"""What a model costs: parameters, FLOPs per image (torch's own counter) and its layer groups."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fastcls.models.groups import layer_groups

__all__ = ["ModelSummary", "summarize"]


@dataclass
class ModelSummary:
    arch: str
    size: int
    num_classes: int
    params: int
    trainable: int
    flops: int  # per image, counted by torch.utils.flop_counter (a multiply-add is 2 FLOPs)
    groups: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def summarize(model: nn.Module, arch: str, size: int, num_classes: int) -> ModelSummary:
    """Count parameters and FLOPs for one (1, 3, size, size) image in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        model.train(was_training)
    groups = [
        {"name": g.name, "params": g.numel(model), "tensors": len(g.params), "first": g.params[0]}
        for g in layer_groups(model)
    ]
    return ModelSummary(
        arch=arch,
        size=size,
        num_classes=num_classes,
        params=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        flops=int(counter.get_total_flops()),
        groups=groups,
    )
