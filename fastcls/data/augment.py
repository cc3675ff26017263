"""Augmentation policies applied to each training image (never to validation), from torchvision.transforms.v2.

A policy is a list of named ops (`OPS`, in the order they run) switched on by the settings of a
`[data.aug]` table (`fastcls.config.AugConfig`): a random-resized crop from the whole image,
rotation, flips, RandAugment / TrivialAugmentWide / AutoAugment, colour jitter, Gaussian blur and
RandomErasing. A preset (`PRESETS`) gives the starting values; the table's other keys override them.

Every image gets its own seed, drawn up front from the loader's seeded generator: the policy runs
with torch's default generator seeded from it (and restored afterwards), so an image's augmentation
depends only on that seed, whichever process or worker computes it. torchvision draws every random
parameter of these ops from the CPU generator, also for images on a GPU.

torchvision is imported on first use, so `fastcls --help` and the config stay light.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastcls.aug_settings import AUTO_AUGMENTS, DEFAULTS, PRESETS, resolve_settings

__all__ = ["AUTO_AUGMENTS", "DEFAULTS", "OPS", "PRESETS", "Op", "Policy", "build_policy", "resolve_settings"]


def _v2() -> Any:
    from torchvision.transforms import v2

    return v2


def _mode(interpolation: str) -> Any:
    """timm-style names to torchvision's; tensors have no Lanczos, so it becomes bicubic."""
    modes = _v2().InterpolationMode
    return {"nearest": modes.NEAREST, "bilinear": modes.BILINEAR, "bicubic": modes.BICUBIC, "lanczos": modes.BICUBIC}[
        interpolation
    ]


def _blur_kernel(sigma: float, size: int) -> int:
    """An odd kernel of radius ~2 sigma that reflect padding allows at this image size."""
    radius = max(1, min(math.ceil(2 * sigma), (size - 1) // 2))
    return 2 * radius + 1


@dataclass(frozen=True)
class Op:
    """One named augmentation: when the settings switch it on, and how to build its v2 transform
    from the settings, the output size and the interpolation name."""

    help: str
    active: Callable[[Mapping[str, Any]], bool]
    build: Callable[[Mapping[str, Any], int, str], Any]


def _crop(s: Mapping[str, Any], size: int, interpolation: str) -> Any:
    ratio = float(s["crop_ratio"])
    scale = (float(s["crop_scale"]), 1.0)
    return _v2().RandomResizedCrop(size, scale=scale, ratio=(1 / ratio, ratio), interpolation=_mode(interpolation))


def _jitter(s: Mapping[str, Any], size: int, interpolation: str) -> Any:
    strength = float(s["jitter"])
    return _v2().ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=float(s["hue"]))


def _blur(s: Mapping[str, Any], size: int, interpolation: str) -> Any:
    sigma = float(s["blur_sigma"])
    v2 = _v2()
    return v2.RandomApply([v2.GaussianBlur(_blur_kernel(sigma, size), (0.1, sigma))], p=float(s["blur"]))


def _bilinear() -> Any:
    return _v2().InterpolationMode.BILINEAR


OPS: dict[str, Op] = {
    "crop": Op(
        "random-resized crop of the whole image: crop_scale = smallest share of the area kept, "
        "crop_ratio = largest aspect change",
        lambda s: s["crop_scale"] > 0,
        _crop,
    ),
    "rotate": Op(
        "rotation by up to +-rotate degrees (corners filled black)",
        lambda s: s["rotate"] > 0,
        lambda s, size, i: _v2().RandomRotation(float(s["rotate"]), interpolation=_bilinear()),
    ),
    "hflip": Op(
        "horizontal flip with probability hflip",
        lambda s: s["hflip"] > 0,
        lambda s, size, i: _v2().RandomHorizontalFlip(float(s["hflip"])),
    ),
    "vflip": Op(
        "vertical flip with probability vflip",
        lambda s: s["vflip"] > 0,
        lambda s, size, i: _v2().RandomVerticalFlip(float(s["vflip"])),
    ),
    "randaugment": Op(
        "auto_aug = randaugment: RandAugment, 2 ops at `magnitude` (0-30, default 9)",
        lambda s: s["auto_aug"] == "randaugment",
        lambda s, size, i: _v2().RandAugment(num_ops=2, magnitude=int(s["magnitude"]), interpolation=_bilinear()),
    ),
    "trivialaugment": Op(
        "auto_aug = trivialaugment: TrivialAugmentWide (one op at a random magnitude)",
        lambda s: s["auto_aug"] == "trivialaugment",
        lambda s, size, i: _v2().TrivialAugmentWide(interpolation=_bilinear()),
    ),
    "autoaugment": Op(
        "auto_aug = autoaugment: AutoAugment's ImageNet policy",
        lambda s: s["auto_aug"] == "autoaugment",
        lambda s, size, i: _v2().AutoAugment(interpolation=_bilinear()),
    ),
    "jitter": Op(
        "colour jitter: brightness, contrast and saturation by up to +-jitter, hue by up to +-hue",
        lambda s: s["jitter"] > 0 or s["hue"] > 0,
        _jitter,
    ),
    "blur": Op(
        "Gaussian blur with probability blur, sigma from 0.1 to blur_sigma pixels", lambda s: s["blur"] > 0, _blur
    ),
    "erasing": Op(
        "RandomErasing with probability erasing (a random rectangle set to 0)",
        lambda s: s["erasing"] > 0,
        lambda s, size, i: _v2().RandomErasing(p=float(s["erasing"]), value=0),
    ),
}


class Policy:
    """The active ops of some settings as one v2 pipeline, applied to one uint8 image with its seed.

    Input: a uint8 (3, H, W) tensor; the whole image (any size) when `crops`, else the (3, size,
    size) centre crop validation sees. Output: uint8 (3, size, size).
    """

    def __init__(self, settings: Mapping[str, Any], size: int, interpolation: str = "bilinear") -> None:
        self.settings, self.size = dict(settings), size
        self.names = [name for name, op in OPS.items() if op.active(self.settings)]
        self.crops = "crop" in self.names
        ops = [OPS[name].build(self.settings, size, interpolation) for name in self.names]
        self.transform = _v2().Compose(ops) if ops else _v2().Identity()

    def __call__(self, image: Any, seed: int) -> Any:
        import torch

        state = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)  # torch.manual_seed also seeds CUDA and costs 0.3 ms
        try:
            return self.transform(image)
        finally:
            torch.set_rng_state(state)

    def describe(self) -> str:
        return ", ".join(self.names) or "nothing"


def build_policy(preset: str, overrides: Mapping[str, Any] | None, size: int, interpolation: str) -> Policy | None:
    """The policy for a preset plus overrides at `size`, or None when no op is active."""
    policy = Policy(resolve_settings(preset, overrides), size, interpolation)
    return policy if policy.names else None
