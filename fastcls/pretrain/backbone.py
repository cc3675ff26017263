"""The backbone a pretraining run trains and saves: a classifier of the arch with its classifier removed.

Built as `build_model` builds the classifier, then the modules whose tensors `load_pretrained`
treats as the classifier become `nn.Identity`. So the saved tensors carry exactly the names of
that arch's classifier minus its head, and `fastcls finetune --weights RUN` loads every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastcls.config import CnnConfig
from fastcls.errors import ArchError
from fastcls.models.registry import ArchSpec

__all__ = ["Backbone", "build_backbone"]


@dataclass
class Backbone:
    """The module (image -> feature vector), its feature width, and where its weights came from."""

    module: nn.Module
    feature_dim: int
    weights_note: str
    removed: list[str]  # the classifier tensors the full model has and this one does not


def _strip_classifier(model: nn.Module, family: str) -> list[str]:
    from fastcls.models.weights import classifier_keys

    keys = classifier_keys(model)
    for name in sorted({key.rsplit(".", 1)[0] for key in keys}):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    if family == "cnn":  # its dropout sits between the features and the classifier: no use without one
        model.head.dropout = nn.Identity()
    return keys


def build_backbone(spec: ArchSpec, size: int, cnn: CnnConfig | None, pretrained: bool, weights: str | None) -> Backbone:
    """A random or pretrained (file, run folder, packaged, hub: as `finetune`) backbone at `size` px."""
    from fastcls.models.registry import build_model
    from fastcls.models.weights import load_pretrained

    # Two classes: the classifier is removed below, so its width does not matter. timm's dropout
    # before the classifier is off: it would only add noise to the features SSL compares.
    model = build_model(spec, 2, size, cnn, head_dropout=0.0 if spec.family == "timm" else None)
    note = "random init"
    if pretrained:
        note = f"weights from {load_pretrained(model, spec.name, spec.family, weights).source}"
    removed = _strip_classifier(model, spec.family)
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, size, size))
    except RuntimeError as exc:
        raise ArchError(f"{spec.name} cannot run at {size}px: {str(exc).splitlines()[0]}") from None
    if out.ndim != 2:
        shape = tuple(out.shape[1:])
        raise ArchError(f"{spec.name} without its classifier gives {shape}-shaped features, not a vector.")
    model.train()
    return Backbone(model, int(out.shape[1]), note, removed)
