"""Decode a split once into uint8 memory and serve normalised batches from it.

Why in memory: on a small machine, per-item decoding and worker processes cost more than the
model for small images (measured: fastai's DataLoader with 2 workers was slower than with 0).
Decoding once, with threads (Pillow releases the GIL), then slicing a tensor keeps the training
loop as fast as a hand-written one. Splits too large for the memory budget are streamed instead
(`fastcls.data.stream`, chosen by `fastcls.data.pipeline`).

Validation and un-augmented training images are stored at their final size, (N, 3, S, S). Training
images that a random-resized crop will cut are stored whole, at the short side size / crop_pct,
in `PackedImages`: one uint8 buffer, each image height x width x 3 (the layout Pillow decodes to,
which torch's fast uint8 resize reads directly), so a crop can reach every pixel of the photo.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastcls.config import flag
from fastcls.data.batching import Loader
from fastcls.data.images import BadImageError, Preprocessing, load_image, load_uncropped
from fastcls.data.shards import Shard
from fastcls.data.sources import Sample
from fastcls.errors import DataError
from fastcls.reporting import Reporter

__all__ = [
    "Batches",
    "DecodedSplit",
    "PackedImages",
    "channel_stats",
    "decode_paths",
    "decode_split",
    "memory_budget",
    "packed_channel_stats",
]

DEFAULT_MEMORY_BUDGET = 6 * 2**30


def memory_budget() -> int:
    """Bytes of decoded images the in-memory loader may hold: FASTCLS_MEMORY_BUDGET, default 6 GiB
    (read at each call, so a test or a long-lived process can change it)."""
    raw = os.environ.get("FASTCLS_MEMORY_BUDGET")
    if not raw:
        return DEFAULT_MEMORY_BUDGET
    try:
        return int(float(raw))
    except ValueError:
        raise DataError(f"FASTCLS_MEMORY_BUDGET={raw!r} is not a number of bytes, e.g. 6e9.") from None


class PackedImages:
    """Images of different sizes in one flat uint8 buffer; image i is `data[offsets[i]:offsets[i+1]]`,
    stored (height, width, 3). Indexing gives a (3, h, w) view (channels-last strides), no copy."""

    def __init__(self, data: torch.Tensor, offsets: list[int], shapes: list[tuple[int, int]]) -> None:
        self.data, self.offsets, self.shapes = data, offsets, shapes

    @classmethod
    def pack(cls, arrays: Sequence[np.ndarray]) -> PackedImages:
        offsets = [0]
        for array in arrays:
            offsets.append(offsets[-1] + array.size)
        data = torch.empty(offsets[-1], dtype=torch.uint8)
        flat = data.numpy()
        for array, start, stop in zip(arrays, offsets[:-1], offsets[1:], strict=True):
            flat[start:stop] = array.reshape(-1)
        return cls(data, offsets, [(a.shape[0], a.shape[1]) for a in arrays])

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> torch.Tensor:
        h, w = self.shapes[index]
        return self.data[self.offsets[index] : self.offsets[index + 1]].view(h, w, 3).permute(2, 0, 1)

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device: torch.device | str) -> PackedImages:
        return PackedImages(self.data.to(device), self.offsets, self.shapes)


@dataclass
class DecodedSplit:
    """A split's images, labels as class indices, and what was skipped. `images` is uint8 (N, 3, S, S),
    or PackedImages of whole images for random crops."""

    images: torch.Tensor | PackedImages
    labels: torch.Tensor
    paths: list[Path]
    skipped: list[str]


def decode_paths(
    paths: Sequence[Path],
    prep: Preprocessing,
    reporter: Reporter | None = None,
    description: str = "decode",
    uncropped: bool = False,
) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode files with a thread pool; unreadable ones come back as None with their error.

    Arrays are (3, S, S) as the model sees them, or with `uncropped` (H, W, 3) at the short side
    size / crop_pct.
    """
    load = load_uncropped if uncropped else load_image

    def one(path: Path) -> np.ndarray | str:
        try:
            return load(path, prep)
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
    uncropped: bool = False,
) -> DecodedSplit:
    """Decode `samples` (at most the memory budget); bad files are skipped with one counted warning, or
    raise (on_bad_image=error). With `uncropped`, whole images at the short side size / crop_pct, packed
    (for random crops; `fastcls.data.pipeline` checks their estimated size against the budget)."""
    index = label_index(samples, classes)
    if not samples:
        raise DataError(f"nothing to {description}: the split is empty (too few images per class?).")
    need = len(samples) * 3 * prep.size * prep.size
    budget = memory_budget()
    if not uncropped and need > budget:
        raise DataError(
            f"{len(samples)} images at {prep.size}px need {need / 2**30:.2f} GiB in memory, over the "
            f"{budget / 2**30:.2f} GiB budget; use {flag('loader')} stream (or auto), lower {flag('size')}, train on "
            f"{flag('fraction')} 1/4, or raise FASTCLS_MEMORY_BUDGET (bytes)."
        )
    arrays, errors = decode_paths([s.path for s in samples], prep, reporter, description, uncropped)
    if errors and on_bad_image == "error":
        raise DataError(
            f"{len(errors)} unreadable image(s), first: {errors[0]}; fix or remove them, or pass "
            f"{flag('on_bad_image')} skip."
        )
    kept = [(a, s) for a, s in zip(arrays, samples, strict=True) if a is not None]
    if errors and reporter is not None:
        reporter.warn(f"skipped {len(errors)} unreadable image(s) in {description}, e.g. {errors[0]}")
    if not kept:
        raise DataError(f"no readable images in {description}; run `fastcls data check` to see why.")
    good = [a for a, _ in kept]
    images = PackedImages.pack(good) if uncropped else torch.from_numpy(np.stack(good))
    labels = torch.tensor([index[s.label] for _, s in kept], dtype=torch.long)
    return DecodedSplit(images, labels, [s.path for _, s in kept], errors)


def label_index(samples: Sequence[Sample], classes: Sequence[str]) -> dict[str, int]:
    """Class name -> index; labels outside `classes` are a DataError."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise DataError(f"labels {', '.join(unknown)} are not among the model's classes ({', '.join(classes)}).")
    return index


def channel_stats(images: torch.Tensor, limit: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of up to `limit` images: a scratch model's normalisation."""
    sample = images[:limit].float().div_(255)
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def packed_channel_stats(chunks: Iterator[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`channel_stats` from uint8 pixel chunks shaped (..., 3) (HWC), summed in float64 so a stream of
    chunks never holds more than one: for whole images and for streamed splits."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for chunk in chunks:
        pixels = chunk.reshape(-1, 3).double().div_(255)
        total += pixels.sum(0)
        squares += pixels.square().sum(0)
        count += len(pixels)
    mean = total / max(count, 1)
    var = (squares - count * mean.square()) / max(count - 1, 1)
    std = var.clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


class Batches(Loader):
    """Normalised float batches sliced from a DecodedSplit's (N, 3, S, S) tensor; what fastai's Learner
    iterates over when the data fits in memory and training images are not augmented per image.

    The tensor may live on the GPU (`fastcls.data.pipeline` puts it there when it fits): batches are
    then sliced on the device, with no host-to-device copy.
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
        channels_last: bool = False,
        workers: int = 0,
        weights: torch.Tensor | None = None,
        shard: Shard | None = None,
    ) -> None:
        if not isinstance(split.images, torch.Tensor):
            raise TypeError("Batches slices fixed-size images; per-image augmentation goes through ItemBatches.")
        super().__init__(
            split.labels, split.paths, prep, bs, shuffle, drop_last, seed, device, None, channels_last, weights, shard
        )
        self.split, self.workers = split, workers

    @property
    def skipped(self) -> list[str]:
        return self.split.skipped

    def plain(self) -> Batches:
        """The same images in stored order, whole last batch included: e.g. to compute features once."""
        return Batches(self.split, self.prep, self.bs, device=self.device, channels_last=self.channels_last)

    def _batch(self, positions: list[int], ordered: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.split.images, self.split.labels
        if not ordered:  # stored order: a view, no gather
            start = positions[0] if positions else 0
            return self._finish(images[start : start + len(positions)], labels[start : start + len(positions)])
        chosen = torch.tensor(positions, dtype=torch.long)
        return self._finish(images[chosen.to(images.device)], labels[chosen])

    def iter_indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[int]]]:
        """The epoch's order is drawn up front from the seeded generator, so the batches are the same
        whether `workers` threads prepare them ahead or not."""
        order, _ = self.plan()
        batches = self.batch_positions(order)
        ordered = order is not None
        if self.workers == 0:
            for positions in batches:
                yield (*self._batch(positions, ordered), positions)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fastcls-batches") as pool:
            ahead = [pool.submit(self._batch, batches[i], ordered) for i in range(min(len(batches), 2 * self.workers))]
            for index, positions in enumerate(batches):
                batch = ahead.pop(0).result()
                following = index + len(ahead) + 1
                if following < len(batches):
                    ahead.append(pool.submit(self._batch, batches[following], ordered))
                yield (*batch, positions)
