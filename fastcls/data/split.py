"""Stratified index selection: every class keeps its share, so small classes never vanish."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["stratified_split", "stratified_subset"]


def _by_class(labels: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    return groups


def stratified_split(labels: Sequence[str], pct: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (keep, take) with about `pct` of each class in `take`.

    A class with two or more items keeps at least one on each side. Deterministic for a seed.
    """
    rng = np.random.RandomState(seed)
    keep: list[int] = []
    take: list[int] = []
    groups = _by_class(labels)
    for label in sorted(groups):
        members = np.array(groups[label])[rng.permutation(len(groups[label]))]
        n_take = round(len(members) * pct)
        n_take = min(max(n_take, 1), len(members) - 1) if len(members) >= 2 else 0
        take.extend(members[:n_take].tolist())
        keep.extend(members[n_take:].tolist())
    return sorted(keep), sorted(take)


def stratified_subset(labels: Sequence[str], fraction: float, seed: int) -> list[int]:
    """Indices of about `fraction` of each class (at least one per class)."""
    if fraction >= 1:
        return list(range(len(labels)))
    rng = np.random.RandomState(seed)
    chosen: list[int] = []
    groups = _by_class(labels)
    for label in sorted(groups):
        members = np.array(groups[label])[rng.permutation(len(groups[label]))]
        chosen.extend(members[: max(1, round(len(members) * fraction))].tolist())
    return sorted(chosen)
