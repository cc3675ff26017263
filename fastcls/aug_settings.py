"""The augmentation settings' values: defaults, presets and the auto-augment names.

Below the config (which checks a `[data.aug]` table against them) and below fastcls.data.augment
(which turns them into torchvision transforms), so both read one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastcls.errors import ConfigError, did_you_mean
from fastcls.registry import Registry

__all__ = ["AUTO_AUGMENTS", "DEFAULTS", "PRESETS", "resolve_settings"]

AUTO_AUGMENTS = ("none", "randaugment", "trivialaugment", "autoaugment")

# The value of every setting when neither the preset nor the table sets it: nothing happens.
DEFAULTS: dict[str, Any] = {
    "crop_scale": 0.0,  # 0: no random crop (the centre crop / squish that validation sees)
    "crop_ratio": 1.0,
    "rotate": 0.0,
    "hflip": 0.0,
    "vflip": 0.0,
    "auto_aug": "none",
    "magnitude": 9,
    "jitter": 0.0,
    "hue": 0.0,
    "blur": 0.0,
    "blur_sigma": 1.5,
    "erasing": 0.0,
}

PRESETS: Registry[dict[str, Any]] = Registry("aug", {
    "none": {},
    # small zooms and tilts; no flips, so digits and text stay readable
    "light": {"crop_scale": 0.75, "crop_ratio": 1.1, "rotate": 10.0},
    # the seed notebooks' recipe: random resized crop, flips, rotation 30, Gaussian blur
    "standard": {"crop_scale": 0.35, "crop_ratio": 4 / 3, "rotate": 30.0, "hflip": 0.5, "blur": 0.2},
    "strong": {"crop_scale": 0.2, "crop_ratio": 4 / 3, "rotate": 45.0, "hflip": 0.5, "blur": 0.4, "jitter": 0.3},
})  # fmt: skip


def resolve_settings(preset: str = "none", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every setting's value: the defaults, then the preset's, then the explicit ones (None = not set)."""
    PRESETS.check(preset)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown augmentation setting {unknown[0]!r}.{did_you_mean(unknown[0], DEFAULTS)}")
    return DEFAULTS | PRESETS[preset] | given
