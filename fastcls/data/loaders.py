"""Decode a split once into a uint8 tensor in memory and serve normalised batches from it.

Why in memory: on a small machine, per-item decoding and worker processes cost more than the
model for small images (measured: fastai's DataLoader with 2 workers was slower than with 0).
Decoding once, with threads (Pillow releases the GIL), then slicing a tensor keeps the training
loop as fast as a hand-written one. Data sets too large for the memory budget get a clear error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastcls.data.images import BadImageError, Preprocessing, load_image
from fastcls.data.shards import Shard
from fastcls.data.sources import Sample
from fastcls.errors import DataError
from fastcls.reporting import Reporter

__all__ = [
    "MEMORY_BUDGET_BYTES",
    "Batches",
    "DecodedSplit",
    "channel_stats",
    "decode_paths",
    "decode_split",
]

MEMORY_BUDGET_BYTES = int(os.environ.get("FASTCLS_MEMORY_BUDGET", 6 * 2**30))


@dataclass
class DecodedSplit:
    """A split's images as uint8 (N, 3, S, S), labels as class indices, and what was skipped."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    skipped: list[str]


def decode_paths(
    paths: Sequence[Path],
    prep: Preprocessing,
    reporter: Reporter | None = None,
    description: str = "decode",
) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode files with a thread pool; unreadable ones come back as None with their error."""
    need = len(paths) * 3 * prep.size * prep.size
    if need > MEMORY_BUDGET_BYTES:
        raise DataError(
            f"{len(paths)} images at {prep.size}px need {need / 2**30:.1f} GiB in memory, over the "
            f"{MEMORY_BUDGET_BYTES / 2**30:.1f} GiB budget; lower --size, train on --fraction 1/4, "
            "or raise FASTCLS_MEMORY_BUDGET (bytes)."
        )

    def one(path: Path) -> np.ndarray | str:
        try:
            return load_image(path, prep)
        except BadImageError as exc:
            return str(exc)
        except FileNotFoundError:
            return f"{path}: file not found"

    arrays: list[np.ndarray | None] = []
    errors: list[str] = []
    reporter = reporter or Reporter("quiet")
    with (
        reporter.task(description, len(paths)) as task,
        ThreadPoolExecutor(os.cpu_count() or 1) as pool,
    ):
        for result in pool.map(one, paths, chunksize=64):
            if isinstance(result, str):
                errors.append(result)
                arrays.append(None)
            else:
                arrays.append(result)
            task.advance()
    return arrays, errors


def decode_split(
    samples: Sequence[Sample],
    classes: Sequence[str],
    prep: Preprocessing,
    on_bad_image: str = "skip",
    reporter: Reporter | None = None,
    description: str = "decode",
) -> DecodedSplit:
    """Decode `samples`; bad files are skipped with one counted warning, or raise (on_bad_image=error)."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise DataError(f"labels {', '.join(unknown)} are not among the model's classes ({', '.join(classes)}).")
    if not samples:
        raise DataError(f"nothing to {description}: the split is empty (too few images per class?).")
    arrays, errors = decode_paths([s.path for s in samples], prep, reporter, description)
    if errors and on_bad_image == "error":
        raise DataError(
            f"{len(errors)} unreadable image(s), first: {errors[0]}; fix or remove them, or pass --on-bad-image skip."
        )
    kept = [(a, s) for a, s in zip(arrays, samples, strict=True) if a is not None]
    if errors and reporter is not None:
        reporter.warn(f"skipped {len(errors)} unreadable image(s) in {description}, e.g. {errors[0]}")
    if not kept:
        raise DataError(f"no readable images in {description}; run `fastcls data check` to see why.")
    images = torch.from_numpy(np.stack([a for a, _ in kept]))
    labels = torch.tensor([index[s.label] for _, s in kept], dtype=torch.long)
    return DecodedSplit(images, labels, [s.path for _, s in kept], errors)


def channel_stats(images: torch.Tensor, limit: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of up to `limit` images: a scratch model's normalisation."""
    sample = images[:limit].float().div_(255)
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


class Batches:
    """Normalised float batches from a DecodedSplit; what fastai's Learner iterates over.

    Shuffling uses its own seeded generator, so an epoch's order depends only on the seed. With a
    `shard` (data-parallel training) every rank draws the same global order and serves only its
    part of each global batch of `bs * shard.size` images (fastcls.data.shards).
    """

    def __init__(
        self,
        split: DecodedSplit,
        prep: Preprocessing,
        bs: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        channels_last: bool = False,
        workers: int = 0,
        shard: Shard | None = None,
    ) -> None:
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.split, self.prep, self.bs, self.augment = split, prep, bs, augment
        self.shuffle, self.workers = shuffle, workers
        self.shard = shard
        self.drop_last = drop_last and len(split.labels) > bs
        if shard is not None and shard.batches(len(split.labels), bs) < 1:
            raise DataError(
                f"{len(split.labels)} images are fewer than one global batch of {bs} x {shard.size} processes; "
                "lower --bs."
            )
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(device)
        self._scale = torch.tensor(prep.std).view(1, 3, 1, 1) * 255
        self._shift = torch.tensor(prep.mean).view(1, 3, 1, 1) * 255

    @property
    def n(self) -> int:
        return len(self.split.labels)

    def __len__(self) -> int:
        if self.shard is not None:
            return self.shard.batches(self.n, self.bs)
        return self.n // self.bs if self.drop_last else math.ceil(self.n / self.bs)

    def to(self, device: torch.device | str) -> Batches:
        self.device = torch.device(device)
        return self

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True).float()
        return images.sub_(self._shift.to(self.device)).div_(self._scale.to(self.device))

    def _batch(self, index: int, order: torch.Tensor | None, seed: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.bs
        if order is None:
            images = self.split.images[start : start + self.bs]
            labels = self.split.labels[start : start + self.bs]
        else:
            chosen = order[start : start + self.bs]
            images, labels = self.split.images[chosen], self.split.labels[chosen]
        images = self.normalise(images)
        if self.augment is not None and seed is not None:
            images = self.augment(images, torch.Generator().manual_seed(seed))
        return images.contiguous(memory_format=self.memory_format), labels.to(self.device, non_blocking=True)

    def draw_epoch(self) -> tuple[torch.Tensor | None, list[int | None]]:
        """The next epoch's order (None: file order) and each batch's augmentation seed, drawn from
        the seeded generator; anything that stands in for these batches draws through here too."""
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else None
        seeds = (
            torch.randint(0, 2**62, (len(self),), generator=self.generator).tolist()
            if self.augment is not None
            else [None] * len(self)
        )
        if self.shard is not None:
            order = self.shard.order(order if order is not None else torch.arange(self.n), self.bs)
            seeds = self.shard.seeds(seeds)
        return order, seeds

    def in_order(self, bs: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once, in file order, normalised and never augmented (e.g. to compute features)."""
        for start in range(0, self.n, bs):
            images = self.normalise(self.split.images[start : start + bs])
            labels = self.split.labels[start : start + bs].to(self.device, non_blocking=True)
            yield images.contiguous(memory_format=self.memory_format), labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's order and every batch's augmentation seed are drawn up front from the seeded
        generator, so the batches are the same whether `workers` threads prepare them ahead or not."""
        order, seeds = self.draw_epoch()
        if self.workers == 0:
            for index in range(len(self)):
                yield self._batch(index, order, seeds[index])
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fastcls-batches") as pool:
            ahead = [pool.submit(self._batch, i, order, seeds[i]) for i in range(min(len(self), 2 * self.workers))]
            for index in range(len(self)):
                batch = ahead.pop(0).result()
                following = index + len(ahead) + 1
                if following < len(self):
                    ahead.append(pool.submit(self._batch, following, order, seeds[following]))
                yield batch
