"""Per-image batches through a torch DataLoader: streamed from files, or augmented from memory.

`ItemBatches` makes each image on its own: decoded from its file every epoch (`FileItems`, the
streaming loader, for data larger than memory and for scoring), or cut from the decoded images in
memory (`MemoryItems`, when training images are augmented per image). With `workers` > 0 a
DataLoader's worker processes do that ahead of the model (pinned memory on CUDA, persistent
workers, prefetch); with 0 the main process does. Normalisation happens on the device.

The order and every image's seed come from the loader's seeded generator (`Loader.plan`), so the
batches are the same for any number of workers, equal to the in-memory `Batches` when nothing is
augmented, and a resumed run continues exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastcls.config import flag
from fastcls.data.batching import Loader, normalise, normalise_
from fastcls.data.images import BadImageError, Preprocessing, load_image, open_rgb
from fastcls.data.loaders import PackedImages
from fastcls.data.shards import Shard
from fastcls.errors import DataError
from fastcls.reporting import Reporter

__all__ = ["FileItems", "ItemBatches", "MemoryItems", "default_workers"]

PREFETCH = 4  # batches each worker prepares ahead


def default_workers() -> int:
    """DataLoader worker processes when --workers is not given: up to 4, one per CPU core."""
    return max(1, min(4, os.cpu_count() or 1))


class FileItems:
    """Images decoded from their files, each time they are asked for (the robust RGB opening of
    `fastcls.data.images`): the centre crop / squish, or the whole image for a policy that crops."""

    on_device = False

    def __init__(self, paths: Sequence[Path], prep: Preprocessing, policy: Any = None) -> None:
        self.paths, self.prep, self.policy = list(paths), prep, policy

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int, seed: int | None) -> torch.Tensor:
        path = self.paths[index]
        if self.policy is not None and self.policy.crops:
            # the whole image at full resolution: the random crop is cut before any downscaling
            whole = torch.from_numpy(np.array(open_rgb(path), dtype=np.uint8)).permute(2, 0, 1)
            return self.policy(whole, seed)
        image = torch.from_numpy(load_image(path, self.prep))
        return image if self.policy is None else self.policy(image, seed)

    def plain(self) -> FileItems:
        return FileItems(self.paths, self.prep)


class MemoryItems:
    """Decoded images in memory (fixed-size (N, 3, S, S), or PackedImages of whole images), each
    passed through the augmentation policy with its seed."""

    def __init__(
        self, images: torch.Tensor | PackedImages, prep: Preprocessing, policy: Any = None, paths: Sequence[Path] = ()
    ) -> None:
        self.images, self.prep, self.policy, self.paths = images, prep, policy, list(paths)

    @property
    def on_device(self) -> bool:
        return self.images.device.type != "cpu"

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int, seed: int | None) -> torch.Tensor:
        image = self.images[index]
        if self.policy is not None:
            return self.policy(image, seed)
        if isinstance(self.images, PackedImages):  # whole images seen without augmentation: the eval view
            return _eval_view(image, self.prep)
        return image

    def plain(self) -> MemoryItems:
        return MemoryItems(self.images, self.prep, paths=self.paths)


def _eval_view(image: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """A stored whole image (short side size / crop_pct) as validation sees it: the centre crop
    (exactly), or for `squish` a resize of the whole image to size x size."""
    from torchvision.transforms.v2 import functional

    size = prep.size
    if prep.resize == "crop":
        return functional.center_crop(image, [size, size]).contiguous()
    return functional.resize(image, [size, size], antialias=True).contiguous()


class _Dataset(torch.utils.data.Dataset):
    """What the DataLoader's workers run: a whole batch of (index, seed) pairs per call, returned as
    uint8 images (or, with `normalise`, the model's float input), labels, the indices kept and the
    errors of unreadable files."""

    def __init__(self, items: FileItems | MemoryItems, labels: torch.Tensor, normalise: bool = False) -> None:
        self.items, self.labels, self.normalise = items, labels, normalise

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, batch: list[tuple[int, int | None]]) -> tuple[Any, ...]:
        images, kept, errors = [], [], []
        threads = torch.get_num_threads()
        # one image is too small to split over threads: in the main process (workers=0) intra-op
        # threads made per-image ops 5-10x slower here (DataLoader workers already run with one)
        torch.set_num_threads(1)
        try:
            for index, seed in batch:
                try:
                    images.append(self.items.get(index, seed))
                    kept.append(index)
                except BadImageError as exc:
                    errors.append(str(exc))
                except FileNotFoundError:
                    errors.append(f"{self.items.paths[index]}: file not found")
        finally:
            torch.set_num_threads(threads)
        size = self.items.prep.size
        if self.normalise and images and torch.utils.data.get_worker_info() is not None:
            return _normalised_shared(images, self.items.prep), self.labels[kept], kept, errors
        stacked = torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)
        if self.normalise:
            stacked = normalise(stacked, self.items.prep, "cpu")
        return stacked, self.labels[kept], kept, errors


def _normalised_shared(images: list[torch.Tensor], prep: Preprocessing) -> torch.Tensor:
    """A worker's batch as the model's float input, written straight into shared memory, as torch's
    default_collate does for its batches: returning a private tensor would copy it into shared memory
    once more on the way to the main process (measured: about 700 -> 1,000 images/s for the augmented
    in-memory loader, 2 workers, 224 px)."""
    size = prep.size
    storage = torch.UntypedStorage._new_shared(len(images) * 3 * size * size * 4)
    out = torch.empty(0, dtype=torch.float32).set_(storage, 0, (len(images), 3, size, size))
    for row, image in zip(out, images, strict=True):
        row.copy_(image)
    return normalise_(out, prep)


def _as_batch(batch: Any) -> Any:
    return batch  # __getitems__ already built it


class _EpochBatches(torch.utils.data.Sampler):
    """The batch sampler: the current epoch's (index, seed) batches, set before each iteration
    (the DataLoader runs it in the main process, also with persistent workers)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int | None]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ItemBatches(Loader):
    """Batches made image by image through a DataLoader (see the module docstring).

    Unreadable files met while streaming are left out of their batch and warned about once, or
    raise a DataError with `on_bad_image="error"`; `skipped` lists them.
    """

    def __init__(
        self,
        items: FileItems | MemoryItems,
        labels: torch.Tensor,
        bs: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        workers: int = 0,
        weights: torch.Tensor | None = None,
        on_bad_image: str = "skip",
        reporter: Reporter | None = None,
        description: str = "train",
        shard: Shard | None = None,
    ) -> None:
        super().__init__(
            labels, items.paths, items.prep, bs, shuffle, drop_last, seed, device, items.policy, channels_last, weights,
            shard,
        )  # fmt: skip
        self.items, self.on_bad_image, self.reporter, self.description = items, on_bad_image, reporter, description
        self.workers = 0 if items.on_device else workers  # CUDA tensors are not shared with worker processes
        self._skipped: dict[str, None] = {}
        self._warned = False
        self._sampler = _EpochBatches()
        self._loader: torch.utils.data.DataLoader | None = None

    @property
    def skipped(self) -> list[str]:
        return list(self._skipped)

    def plain(self) -> ItemBatches:
        """The same images without augmentation, in stored order, whole last batch included."""
        return ItemBatches(
            self.items.plain(), self.labels, self.bs, device=self.device, channels_last=self.channels_last,
            workers=self.workers, on_bad_image=self.on_bad_image, reporter=self.reporter, description=self.description,
        )  # fmt: skip

    def close(self) -> None:
        self._loader = None  # its persistent workers shut down with it

    def _dataloader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            extra: dict[str, Any] = {}
            if self.workers > 0:
                extra = {"persistent_workers": True, "prefetch_factor": PREFETCH}
            # on the CPU the model's device is the CPU: for images augmented from memory the workers
            # normalise too, in parallel (measured: in the main process it took about a third of that path's
            # time per image, 2 cores, 224 px). Streamed files ship uint8 batches: decoding dominates their
            # time, and the batches in flight (workers x prefetch) take a quarter of the memory floats would.
            in_workers = self.workers > 0 and self.device.type == "cpu" and isinstance(self.items, MemoryItems)
            self._loader = torch.utils.data.DataLoader(
                _Dataset(self.items, self.labels, normalise=in_workers),
                batch_sampler=self._sampler,
                num_workers=self.workers,
                collate_fn=_as_batch,
                pin_memory=self.device.type == "cuda" and not self.items.on_device,
                # its own generator: creating an epoch's iterator must not draw from torch's global RNG
                generator=torch.Generator().manual_seed(self.seed),
                **extra,
            )
        return self._loader

    def _note_errors(self, errors: list[str]) -> None:
        if not errors:
            return
        if self.on_bad_image == "error":
            raise DataError(
                f"unreadable image in {self.description}: {errors[0]}; fix or remove it, or pass "
                f"{flag('on_bad_image')} skip."
            )
        self._skipped.update(dict.fromkeys(errors))

    def iter_indexed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[int]]]:
        order, seeds = self.plan()
        self._sampler.batches = [
            [(index, None if seeds is None else seeds[start + k]) for k, index in enumerate(positions)]
            for start, positions in zip(range(0, self.n, self.bs), self.batch_positions(order), strict=False)
        ]
        for images, labels, kept, errors in self._dataloader():
            self._note_errors(errors)
            if not len(kept):
                continue
            if images.dtype == torch.uint8:
                yield (*self._finish(images, labels), kept)
            else:  # normalised by the workers
                x = images.to(self.device).contiguous(memory_format=self.memory_format)
                yield x, labels.to(self.device), kept
        if self._skipped and not self._warned and self.reporter is not None:
            self._warned = True
            first = next(iter(self._skipped))
            self.reporter.warn(f"skipped {len(self._skipped)} unreadable image(s) in {self.description}, e.g. {first}")
