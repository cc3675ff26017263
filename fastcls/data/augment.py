"""Augmentation presets applied to whole training batches as tensors (never to validation).

One random affine per image (random-resized-crop scale and aspect, rotation, optional flip) done
with a single `affine_grid`/`grid_sample` call, then an optional Gaussian blur. A preset is one
entry in `PRESETS`; its draws come from the batch loader's seeded generator, so runs repeat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastcls.errors import ConfigError, did_you_mean

__all__ = ["PRESETS", "Augment", "get_augment"]


@dataclass(frozen=True)
class Augment:
    """Ranges of the random transform; `scale` is the kept share of the image area."""

    scale: tuple[float, float] = (1.0, 1.0)
    ratio: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0  # degrees, uniform in [-rotate, rotate]
    flip: float = 0.0  # probability of a horizontal flip
    blur: float = 0.0  # probability that an image is blurred
    blur_sigma: tuple[float, float] = (0.1, 1.5)  # in pixels at the batch's size

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = images.shape[0]
        if n == 0:
            return images

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        area = uniform(*self.scale)
        log_ratio = uniform(math.log(self.ratio[0]), math.log(self.ratio[1]))
        w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)
        h = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
        tx, ty = uniform(-1, 1) * (1 - w), uniform(-1, 1) * (1 - h)
        angle = uniform(-self.rotate, self.rotate) * (math.pi / 180)
        flip = torch.where(torch.rand(n, generator=generator) < self.flip, -1.0, 1.0)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack(
            [torch.stack([w * cos * flip, -h * sin, tx], 1), torch.stack([w * sin * flip, h * cos, ty], 1)], 1
        ).to(images)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.blur > 0:
            chosen = torch.rand(n, generator=generator) < self.blur
            if bool(chosen.any()):
                sigma = float(uniform(*self.blur_sigma)[0])
                out[chosen] = _gaussian_blur(out[chosen], sigma)
        return out


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, min(math.ceil(2 * sigma), (min(images.shape[-2:]) - 1) // 2))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    images = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), horizontal, groups=channels)
    return F.conv2d(F.pad(images, (0, 0, radius, radius), mode="reflect"), vertical, groups=channels)


PRESETS: dict[str, Augment | None] = {
    "none": None,
    # small shifts, zooms and tilts; no flips, so digits and text stay readable
    "light": Augment(scale=(0.75, 1.0), ratio=(0.9, 1.1), rotate=10),
    # the seed notebooks' recipe: random resized crop, flips, rotation 30, Gaussian blur
    "standard": Augment(scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), rotate=30, flip=0.5, blur=0.2),
    "strong": Augment(scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), rotate=45, flip=0.5, blur=0.4),
}


def get_augment(name: str) -> Augment | None:
    """The preset called `name` (None for 'none'), or a ConfigError listing the presets."""
    if name not in PRESETS:
        raise ConfigError(f"aug {name!r} is not one of {', '.join(PRESETS)}.{did_you_mean(name, PRESETS)}")
    return PRESETS[name]
