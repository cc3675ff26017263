"""What every batch loader shares: the epoch's seeded plan, class balance, and normalisation on the device.

Both loaders (in memory: `fastcls.data.loaders.Batches`; per item, from files or memory:
`fastcls.data.stream.ItemBatches`) draw each epoch's order, and each image's augmentation seed,
up front from their own seeded generator. So a run's batches depend only on the seed, not on the
loader, the number of workers or which worker computed what; and saving `generator`'s state
(resume.pt) is enough to continue an epoch sequence exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from fastcls.config import flag
from fastcls.data.images import Preprocessing
from fastcls.data.shards import Shard
from fastcls.errors import DataError

__all__ = ["Loader", "class_weights", "normalise", "normalise_", "sample_weights"]


def normalise(images: torch.Tensor, prep: Preprocessing, device: torch.device | str) -> torch.Tensor:
    """uint8 (N, 3, S, S) images as the model's float input on `device` (the copy happens before the float
    conversion, so a host-to-device transfer moves bytes, not floats)."""
    return normalise_(images.to(device, non_blocking=True).float(), prep)


def normalise_(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Float (N, 3, S, S) pixel values 0-255 normalised in place: the one arithmetic every loader uses, so a
    batch is bit-identical whichever process or buffer made it."""
    shift = torch.tensor(prep.mean, device=images.device).view(1, 3, 1, 1) * 255
    scale = torch.tensor(prep.std, device=images.device).view(1, 3, 1, 1) * 255
    return images.sub_(shift).div_(scale)


def _counts(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=classes).double()


def sample_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """`--balance sampler`: each image drawn with probability 1 / (its class's count), so every class
    is drawn equally often in expectation (torch's WeightedRandomSampler recipe)."""
    return (1.0 / _counts(labels, classes).clamp_min(1))[labels]


def class_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """`--balance loss`: cross-entropy weight n / (classes * count) per class, scikit-learn's
    'balanced' weights (mean weight over the images is 1, so the LR means what it did)."""
    counts = _counts(labels, classes)
    weights = len(labels) / (classes * counts.clamp_min(1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights)).float()


class Loader:
    """The part of a batch loader fastai's Learner, the Trainer and resume rely on: `len()`,
    iteration yielding (x, y) on `device`, `.generator` (the seeded order), `.n`, `.bs`, `.to()`.

    `weights`, when given, make the epoch a class-balanced draw with replacement (`--balance
    sampler`) instead of a permutation. Subclasses implement `_batches(order, seeds)`.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        paths: Sequence[Path],
        prep: Preprocessing,
        bs: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        augment: Any = None,
        channels_last: bool = False,
        weights: torch.Tensor | None = None,
        shard: Shard | None = None,
    ) -> None:
        if shard is not None and shard.batches(len(labels), bs) < 1:
            raise DataError(
                f"{len(labels)} images are fewer than one global batch of {bs} x {shard.size} processes; "
                f"lower {flag('bs')}."
            )
        self.shard = shard
        self.labels, self.paths, self.prep, self.bs, self.augment = labels, list(paths), prep, bs, augment
        self.shuffle, self.weights, self.seed = shuffle, weights, seed
        self.drop_last = drop_last and len(labels) > bs
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def skipped(self) -> list[str]:
        """Unreadable images left out so far (memory: at decoding; streaming: as epochs meet them)."""
        return []

    def __len__(self) -> int:
        if self.shard is not None:
            return self.shard.batches(self.n, self.bs)
        return self.n // self.bs if self.drop_last else math.ceil(self.n / self.bs)

    def to(self, device: torch.device | str) -> Loader:
        self.device = torch.device(device)
        return self

    def close(self) -> None:
        """Let go of worker processes, if any (iterating again starts them anew)."""

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return normalise(images, self.prep, self.device)

    def _finish(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalise(images).contiguous(memory_format=self.memory_format)
        return x, labels.to(self.device, non_blocking=True)

    def plan(self) -> tuple[torch.Tensor | None, list[int] | None]:
        """This epoch's order (None: as stored) and one augmentation seed per position (None: no
        augmentation), drawn from `generator` in that order: the only draws an epoch makes."""
        if self.shuffle and self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator)
        elif self.shuffle:
            order = torch.randperm(self.n, generator=self.generator)
        else:
            order = None
        seeds = None
        if self.augment is not None:
            seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator).tolist()
        if self.shard is not None:  # data-parallel: this rank's slice of every global batch (fastcls.data.shards)
            order = self.shard.order(order if order is not None else torch.arange(self.n), self.bs)
            if seeds is not None:
                seeds = self.shard.positions(seeds, self.bs)
        return order, seeds

    def draw_epoch(self) -> tuple[torch.Tensor | None, list[int] | None]:
        """The next epoch's draws, as iterating makes them (`plan`): what stands in for these batches
        (the Trainer's cached features, fastcls.train.features) draws through here to keep the order."""
        return self.plan()

    def plain(self) -> Loader:
        """The same images without augmentation, in stored order, whole last batch included."""
        raise NotImplementedError

    def in_order(self, bs: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once, in stored order, never augmented, `bs` at a time (e.g. to compute features
        once); the batches of a streaming loader leave out files that turned out unreadable."""
        plain = self.plain()
        plain.bs = bs
        try:
            for x, y, _ in plain.iter_indexed():
                yield x, y
        finally:
            plain.close()

    def sample(self, batches: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Up to `batches` whole batches of un-augmented images (as validation sees them), drawn at random
        by `seed` without touching the training order's generator: e.g. to re-estimate BatchNorm statistics.
        A last, smaller batch is left out unless it is the only one, so every batch counts the same."""
        plain = self.plain()
        plain.shuffle = True
        plain.generator.manual_seed(seed)
        whole = max(1, plain.n // plain.bs)
        try:
            for i, (x, y, _) in enumerate(plain.iter_indexed()):
                if i >= min(batches, whole):
                    break
                yield x, y
        finally:
            plain.close()

    def batch_positions(self, order: torch.Tensor | None) -> list[list[int]]:
        """Item indices of each batch of the epoch."""
        indices = order.tolist() if order is not None else list(range(self.n))
        return [indices[i * self.bs : (i + 1) * self.bs] for i in range(len(self))]

    def iter_indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[int]]]:
        """Like iterating, with each batch's item indices (into `paths`): what scoring needs to know
        which files a row of scores belongs to."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y, _ in self.iter_indexed():
            yield x, y
