"""Which images each process of a data-parallel run sees: one small place for every loader.

Training: every process draws the same seeded global order for the epoch; global batch k is
`order[k*bs*size : (k+1)*bs*size]` and rank r trains on its r-th slice of `bs`. So the ranks
together step through exactly the batches one process would with `bs*size` (DDP averages their
gradients into that batch's mean gradient), and each rank steps the same number of times with an
equal share (a partial last global batch is dropped, as `drop_last` does in one process).

Validation is not shuffled, so each rank can own a fixed, contiguous share of the files and
decode only that; the per-rank sums are added up afterwards (fastcls.train.distributed).

A loader applies `Shard.order` to its epoch's order and `Shard.positions` to its per-image
augmentation seeds; nothing else about the loader changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

__all__ = ["Shard"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among `size` processes training together (rank 0 .. size-1)."""

    rank: int
    size: int

    def batches(self, n: int, bs: int) -> int:
        """Training batches per epoch on each rank: whole global batches of `bs * size` images."""
        return n // (bs * self.size)

    def order(self, order: torch.Tensor, bs: int) -> torch.Tensor:
        """This rank's part of the epoch's global `order`, as its own order: its batch k is
        `result[k*bs : (k+1)*bs]`, the rank's slice of global batch k."""
        step = bs * self.size
        usable = len(order) // step * step
        return order[:usable].view(-1, self.size, bs)[:, self.rank].reshape(-1)

    def positions(self, values: list[T], bs: int) -> list[T]:
        """This rank's part of a per-position list of the epoch (e.g. each image's augmentation seed),
        cut exactly as `order` cuts the order, so every image keeps the seed it has in one process."""
        step = bs * self.size
        usable = len(values) // step * step
        return [values[k * step + self.rank * bs + i] for k in range(usable // step) for i in range(bs)]

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous share of `items` (the valid split): sizes differ by at most one."""
        n = len(items)
        return list(items[self.rank * n // self.size : (self.rank + 1) * n // self.size])
