"""Which loader serves a run's images, and building it: in memory when the decoded splits fit the
memory budget, streamed from files otherwise (`--loader auto|memory|stream`).

The in-memory path decodes each image once (fast for small data: it beat fastai's DataLoader
here); the streaming path decodes each file every epoch in DataLoader worker processes, in
bounded memory, for data of any size. On CUDA, decoded data that fits in a share of the free GPU
memory is kept on the GPU, so batches are sliced (and augmented) there with no copy per batch.
Commands that score images (evaluate, predict, ensemble, interpret, sensitivity) use
`scoring_loader`, which makes the same choice for one split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fastcls.config import flag
from fastcls.data.augment import Policy, build_policy
from fastcls.data.batching import Loader, class_weights, sample_weights
from fastcls.data.images import Preprocessing, short_side
from fastcls.data.loaders import (
    Batches,
    DecodedSplit,
    PackedImages,
    channel_stats,
    decode_paths,
    decode_split,
    label_index,
    memory_budget,
    packed_channel_stats,
)
from fastcls.data.shards import Shard
from fastcls.data.sources import ImageSource, Sample
from fastcls.data.stream import FileItems, ItemBatches, MemoryItems, default_workers
from fastcls.device import inference_batch
from fastcls.errors import DataError
from fastcls.reporting import Reporter

if TYPE_CHECKING:
    from fastcls.config import DataConfig

__all__ = [
    "GPU_DATA_SHARE",
    "TrainingData",
    "choose_loader",
    "decoded_bytes",
    "gpu_resident",
    "header_sizes",
    "prepare_data",
    "resolve_workers",
    "scoring_loader",
]

GPU_DATA_SHARE = 0.25  # decoded data stays on the GPU when it takes at most this share of the free memory
STATS_LIMIT = 4096  # images a scratch model's normalisation is measured on (as channel_stats)


def header_sizes(samples: Sequence[Sample], limit: int = 64) -> list[tuple[int, int]]:
    """(width, height) of up to `limit` images spread over `samples`, from their headers (no decoding)."""
    from PIL import Image

    step = max(1, len(samples) // limit)
    sizes = []
    for sample in list(samples)[::step][:limit]:
        try:
            with Image.open(sample.path) as image:
                sizes.append(image.size)
        except (OSError, SyntaxError, ValueError):
            continue
    return sizes


def decoded_bytes(
    count: int, prep: Preprocessing, uncropped: bool = False, sizes: Sequence[tuple[int, int]] = ()
) -> int:
    """Bytes `count` images take decoded: size x size x 3 each, or for whole images (random crops) the
    short side size / crop_pct times the long side in the aspect of `sizes` (a sample of the images)."""
    if not uncropped:
        return count * 3 * prep.size * prep.size
    side = short_side(prep)
    aspects = [max(w, h) / max(1, min(w, h)) for w, h in sizes] or [1.0]
    per_image = sum(3 * side * max(prep.size, round(side * a)) for a in aspects) / len(aspects)
    return int(count * per_image)


def choose_loader(requested: str, need: int, budget: int) -> str:
    """`memory` or `stream`: as requested, or for `auto` memory when `need` bytes fit the budget."""
    if requested == "auto":
        return "memory" if need <= budget else "stream"
    if requested == "memory" and need > budget:
        raise DataError(
            f"the decoded images need {need / 2**30:.2f} GiB, over the {budget / 2**30:.2f} GiB memory budget; "
            f"use {flag('loader')} stream (or auto), lower {flag('size')}, or raise FASTCLS_MEMORY_BUDGET (bytes)."
        )
    return requested


def resolve_workers(requested: int | None, loader: str, per_image: bool, device: torch.device) -> int:
    """--workers when given; else 0 for in-memory data on the CPU (measured fastest on 2 cores:
    benchmarks/workers.py) and `default_workers()` processes for streaming or a GPU's augmentation."""
    if requested is not None:
        return requested
    if loader == "memory" and (device.type == "cpu" or not per_image):
        return 0
    return default_workers()


def gpu_resident(nbytes: int, device: torch.device, free_bytes: int | None = None) -> bool:
    """Keep decoded data on `device`? Only on CUDA, and only when it takes at most GPU_DATA_SHARE of
    the free memory (`free_bytes`, default: what torch.cuda.mem_get_info reports), leaving the rest
    to the model, its activations and `--bs auto`. FASTCLS_GPU_DATA=0 turns it off."""
    if device.type != "cuda" or os.environ.get("FASTCLS_GPU_DATA", "1") == "0":
        return False
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    return nbytes <= GPU_DATA_SHARE * free_bytes


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class TrainingData:
    """A run's train and valid splits, decoded in memory or streamed, with the augmentation policy.

    Built by `prepare_data`; `channel_stats()` measures a scratch model's normalisation, `place()`
    moves in-memory data to the GPU when it fits there, `loaders()` makes the train and valid loaders.
    """

    def __init__(
        self,
        source: ImageSource,
        prep: Preprocessing,
        settings: DataConfig,
        policy: Policy | None,
        loader: str,
        need: int,
        reporter: Reporter,
        world: Any = None,
    ) -> None:
        self.source, self.prep, self.settings, self.policy, self.loader = source, prep, settings, policy, loader
        self.need, self.reporter = need, reporter
        self.decoded: dict[str, DecodedSplit] = {}
        self.samples = {split: source.split(split) for split in ("train", "valid")}
        if world is not None:  # data-parallel: every rank needs every train image (the order is global); valid: a share
            self.samples["valid"] = world.valid_share(self.samples["valid"])
        self.device = torch.device("cpu")
        self.built: list[Loader] = []
        if loader == "memory":
            crops = policy is not None and policy.crops
            for split in ("train", "valid"):
                self.decoded[split] = decode_split(
                    self.samples[split], source.classes, prep, settings.on_bad_image, reporter, f"decode {split}",
                    uncropped=crops and split == "train",
                )  # fmt: skip
        else:
            for split in ("train", "valid"):
                if not self.samples[split]:
                    raise DataError(f"nothing to stream in {split}: the split is empty (too few images per class?).")
        index = label_index(source.samples, source.classes)
        self.labels = {
            split: self.decoded[split].labels
            if split in self.decoded
            else torch.tensor([index[s.label] for s in self.samples[split]], dtype=torch.long)
            for split in ("train", "valid")
        }

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.labels["train"]), len(self.labels["valid"])

    def skipped_in(self, split: str) -> int:
        """Unreadable images of one split left out so far."""
        if self.loader == "memory":
            return len(self.decoded[split].skipped)
        built = dict(zip(("train", "valid"), self.built, strict=False))
        return len(built[split].skipped) if split in built else 0

    @property
    def skipped_count(self) -> int:
        """Unreadable images left out: at decoding (memory), or met so far by the loaders (stream)."""
        if self.loader == "memory":
            return sum(len(d.skipped) for d in self.decoded.values())
        return len({error for loader in self.built for error in loader.skipped})

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of (up to STATS_LIMIT) training images, for a scratch model."""
        train = self.decoded.get("train")
        if train is not None and isinstance(train.images, torch.Tensor):
            return channel_stats(train.images, STATS_LIMIT)
        if train is not None:
            packed = train.images
            return packed_channel_stats(iter([packed.data[: packed.offsets[min(STATS_LIMIT, len(packed))]]]))
        paths = [s.path for s in self.samples["train"][:STATS_LIMIT]]

        def chunks():
            for start in range(0, len(paths), 256):
                arrays, _ = decode_paths(paths[start : start + 256], self.prep)
                for array in arrays:
                    if array is not None:
                        yield torch.from_numpy(array).permute(1, 2, 0)

        return packed_channel_stats(chunks())

    def place(self, device: torch.device, free_bytes: int | None = None) -> None:
        """On CUDA, move in-memory data to the GPU when it fits in GPU_DATA_SHARE of the free memory
        (before `--bs auto` measures what is left)."""
        self.device = device
        if self.loader != "memory":
            return
        nbytes = sum(_nbytes(d.images) for d in self.decoded.values())
        if not gpu_resident(nbytes, device, free_bytes):
            return
        for split in self.decoded.values():
            split.images = split.images.to(device)
        self.reporter.info(f"data: decoded images kept on {device} ({_gib(nbytes)}); batches are cut there")

    def close(self) -> None:
        """Stop the loaders' worker processes (after training; scoring builds its own loaders)."""
        for loader in self.built:
            loader.close()

    def class_weights(self) -> torch.Tensor | None:
        """`--balance loss`: the cross-entropy's class weights; None otherwise."""
        if self.settings.balance != "loss":
            return None
        return class_weights(self.labels["train"], len(self.source.classes))

    def loaders(
        self, prep: Preprocessing, bs: int, seed: int, channels_last: bool, shard: Shard | None = None
    ) -> tuple[Loader, Loader]:
        """The training loader (shuffled, last partial batch dropped, augmented; with a `shard`, this
        process's slice of every global batch) and the valid loader."""
        self.prep = prep
        per_image = self.policy is not None
        workers = resolve_workers(self.settings.workers, self.loader, per_image, self.device)
        self.settings.workers = workers
        weights = None
        if self.settings.balance == "sampler":
            weights = sample_weights(self.labels["train"], len(self.source.classes))
        fmt: dict[str, Any] = {"device": self.device, "channels_last": channels_last}
        train_options: dict[str, Any] = {
            "shuffle": True, "drop_last": True, "seed": seed, "weights": weights, "shard": shard,
        }  # fmt: skip
        valid_bs = inference_batch(self.device, bs)
        if self.loader == "memory":
            train_split, valid_split = self.decoded["train"], self.decoded["valid"]
            if per_image:
                items = MemoryItems(train_split.images, prep, self.policy, train_split.paths)
                train: Loader = ItemBatches(items, train_split.labels, bs, workers=workers, **train_options, **fmt)
            else:
                train = Batches(train_split, prep, bs, workers=workers, **train_options, **fmt)
            valid: Loader = Batches(valid_split, prep, valid_bs, **fmt)
            self.built = [train, valid]
            return train, valid
        report = {"on_bad_image": self.settings.on_bad_image, "reporter": self.reporter}
        train_items = FileItems([s.path for s in self.samples["train"]], prep, self.policy)
        train_options |= {"workers": workers, "description": "train"}
        train = ItemBatches(train_items, self.labels["train"], bs, **train_options, **report, **fmt)
        valid_items = FileItems([s.path for s in self.samples["valid"]], prep)
        valid = ItemBatches(
            valid_items, self.labels["valid"], valid_bs, workers=workers, description="valid", **report, **fmt
        )
        self.built = [train, valid]
        return train, valid


def _nbytes(images: torch.Tensor | PackedImages) -> int:
    return images.nbytes if isinstance(images, PackedImages) else images.numel()


def prepare_data(
    source: ImageSource, prep: Preprocessing, settings: DataConfig, reporter: Reporter, world: Any = None
) -> TrainingData:
    """Pick the loader (`settings.loader`, `auto` by the memory budget) and say which, then decode the
    splits when in memory. `settings.loader` is set to the choice, so config.toml repeats it. With a
    `world` (data-parallel training) this process keeps only its share of the valid split."""
    policy = build_policy(settings.aug.preset, settings.aug.overrides(), prep.size, prep.interpolation)
    crops = policy is not None and policy.crops
    train, valid = source.split("train"), source.split("valid")
    sizes = header_sizes(train) if crops else []
    need = decoded_bytes(len(train), prep, crops, sizes) + decoded_bytes(len(valid), prep)
    budget = memory_budget()
    loader = choose_loader(settings.loader, need, budget)
    if settings.loader == "auto":
        relation = "within" if loader == "memory" else "over"
        why = f"train and valid decode to about {_gib(need)}, {relation} the {_gib(budget)} memory budget"
    else:
        why = f"{flag('loader')} {loader}"
    what = "decoded once into memory" if loader == "memory" else "each file decoded every epoch"
    reporter.info(f"loader: {loader} ({why}; {what})")
    if policy is not None:
        reporter.info(f"augmentation per training image: {policy.describe()}")
    settings.loader = loader
    return TrainingData(source, prep, settings, policy, loader, need, reporter, world)


def scoring_loader(
    paths: Sequence[Path],
    labels: torch.Tensor,
    prep: Preprocessing,
    bs: int,
    device: torch.device,
    on_bad_image: str = "skip",
    reporter: Reporter | None = None,
    description: str = "score",
) -> Loader:
    """Batches of `paths` for scoring, in their order: decoded at once when they fit the memory budget,
    else streamed by DataLoader workers in bounded memory. Unreadable files are left out (counted in
    the loader's `skipped`), or raise a DataError with `on_bad_image="error"`."""
    if not paths:
        raise DataError(f"nothing to {description}: no images.")
    if decoded_bytes(len(paths), prep) <= memory_budget():
        arrays, errors = decode_paths(list(paths), prep, reporter, f"decode {description}")
        if errors and on_bad_image == "error":
            raise DataError(f"{len(errors)} unreadable image(s), first: {errors[0]}; fix or remove them.")
        kept = [i for i, a in enumerate(arrays) if a is not None]
        if not kept:
            raise DataError(f"none of the {len(paths)} image(s) could be read, first error: {errors[0]}.")
        if errors and reporter is not None:
            reporter.warn(f"skipped {len(errors)} unreadable image(s) in {description}, e.g. {errors[0]}")
        images = torch.from_numpy(np.stack([arrays[i] for i in kept]))
        split = DecodedSplit(images, labels[kept], [paths[i] for i in kept], errors)
        return Batches(split, prep, bs, device=device)
    workers = default_workers() if len(paths) > bs else 0
    return ItemBatches(
        FileItems(paths, prep), labels, bs, device=device, workers=workers, on_bad_image=on_bad_image,
        reporter=reporter, description=description,
    )  # fmt: skip
