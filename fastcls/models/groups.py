"""Layer groups (stem, stages..., head) for any model: the units of freezing and per-group LRs.

timm models describe themselves through `group_matcher`; the scratch CNN has one group per block
plus its head; other torch modules fall back to their top-level children.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["LayerGroup", "layer_groups", "param_groups"]


@dataclass
class LayerGroup:
    name: str
    params: list[str]  # named_parameters() names, in model order

    def numel(self, model: nn.Module) -> int:
        lookup = dict(model.named_parameters())
        return sum(lookup[p].numel() for p in self.params)


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Groups in forward order; the last one is always the classifier head.

    Every parameter is in exactly one group (any the matcher misses joins the first group).
    """
    groups = _raw_groups(model)
    seen = {name for group in groups for name in group.params}
    stray = [name for name, _ in model.named_parameters() if name not in seen]
    if stray:
        groups[0].params = stray + groups[0].params
    return groups


def param_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The parameters of each layer group: fastai's `splitter` output."""
    lookup = dict(model.named_parameters())
    return [[lookup[name] for name in group.params] for group in layer_groups(model)]


def _raw_groups(model: nn.Module) -> list[LayerGroup]:
    matcher = getattr(model, "group_matcher", None)
    if callable(matcher):
        from timm.models import group_parameters

        grouped = group_parameters(model, matcher(coarse=True))
        groups = []
        ids = sorted(grouped)
        for position, key in enumerate(ids):
            params = list(grouped[key])
            if position == 0:
                name = "stem"
            elif position == len(ids) - 1:
                name = "head"
            else:
                name = f"stage{position}"
            groups.append(LayerGroup(name, params))
        return groups
    groups = []
    for child_name, child in model.named_children():
        if child_name == "features" and all(name.startswith("block") for name in child._modules):
            for sub_name, sub in child.named_children():
                params = [f"{child_name}.{sub_name}.{p}" for p, _ in sub.named_parameters()]
                if params:
                    groups.append(LayerGroup(sub_name, params))
            continue
        params = [f"{child_name}.{p}" for p, _ in child.named_parameters()]
        if params:
            groups.append(LayerGroup(child_name, params))
    if groups:
        groups[-1].name = "head"
    return groups
