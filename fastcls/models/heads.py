"""The classifier head of any model: find it, start it right, and run it alone on cached features.

Why a new head starts at zero: `timm.create_model(arch, num_classes=N)` gives EfficientNet
Google's init (weight std 0.18 for 10 classes), so the first head-only epoch starts at a loss of
~9 where chance is ln(10) = 2.3, and the few steps of a short fine-tune are spent undoing it.
Measured on builtin:digits at 64 px, EfficientNet-Lite0, `--strategy head --epochs 2`, lr 2e-3
(benchmarks/finetune_vs_hand.py, mean of 3 seeds; details in the README):

  timm's own init (std 0.18)            20.6% test (first-epoch train loss 9.3)
  PyTorch default / reset_classifier    see README table
  zero (BiT's choice)                   see README table

Zero init is exact chance (logits all 0, loss ln N) and needs no random numbers, so it does not
shift the RNG stream of the rest of the run; the gradient of the last linear layer does not
vanish at zero (it is features x (p - y)), so it learns from the first step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HeadOnly", "HeadSplit", "classifier_layer", "head_split", "init_head"]


def _last_layer(module: nn.Module) -> nn.Module | None:
    layers = [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    return layers[-1] if layers else None


def classifier_layer(model: nn.Module) -> nn.Module | None:
    """The layer that outputs the class scores: timm's `get_classifier()`, else the last Linear/Conv2d."""
    get = getattr(model, "get_classifier", None)
    if callable(get):
        layer = get()
        found = _last_layer(layer) if isinstance(layer, nn.Module) else None
        if found is not None:
            return found
    return _last_layer(model)


def init_head(model: nn.Module) -> None:
    """Zero the output layer's weight and bias, so the first loss is exactly chance (see module doc)."""
    layer = classifier_layer(model)
    if layer is None:
        return
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()


@dataclass
class HeadSplit:
    """`model(x) == head(features(x))` while the backbone is frozen and in eval mode.

    `attribute` is where the head sits in the model (replaced by Identity to read the features);
    `dropout` is timm's functional `drop_rate`, applied to the features before the classifier.
    """

    parent: nn.Module
    attribute: str
    head: nn.Module
    dropout: float

    def features(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function computing the head's input for a batch (the model with its head removed)."""

        def run(x: torch.Tensor) -> torch.Tensor:
            setattr(self.parent, self.attribute, nn.Identity())
            try:
                return model(x)
            finally:
                setattr(self.parent, self.attribute, self.head)

        return run


class HeadOnly(nn.Module):
    """The trainable head alone, fed with cached features: what a head-only epoch really computes."""

    def __init__(self, head: nn.Module, dropout: float) -> None:
        super().__init__()
        self.head, self.dropout = head, dropout

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.dropout:
            z = F.dropout(z, p=self.dropout, training=self.training)
        return self.head(z)


def head_split(model: nn.Module, head_params: list[str]) -> HeadSplit | None:
    """Where the model's head layer group lives, when it is one module that takes the backbone's
    output directly (timm's classifier, a torchvision top-level child, the cnn's head); else None."""
    lookup = dict(model.named_modules())
    get = getattr(model, "get_classifier", None)
    if callable(get):  # timm: the classifier, after global pooling and drop_rate dropout
        head = get()
        name = next((n for n, m in lookup.items() if m is head), None)
        dropout = float(getattr(model, "drop_rate", 0.0) or 0.0)
    else:  # torchvision and the cnn: the top-level child holding the head group
        name = head_params[0].split(".")[0] if head_params else None
        head, dropout = lookup.get(name) if name else None, 0.0
    if not name or head is None:
        return None
    owned = {f"{name}.{p}" for p, _ in head.named_parameters()}
    if owned != set(head_params):
        return None
    parent_name, _, attribute = name.rpartition(".")
    return HeadSplit(lookup[parent_name] if parent_name else model, attribute, head, dropout)
