"""Open any image file as 8-bit RGB and turn it into a fixed-size uint8 tensor.

Training, evaluation and prediction all go through `load_image`, so a model sees the same pixels
whichever command feeds it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from fastcls.errors import ConfigError

__all__ = [
    "IMAGE_SUFFIXES",
    "INTERPOLATIONS",
    "BadImageError",
    "Preprocessing",
    "load_image",
    "open_rgb",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
RESIZE_MODES = ("squish", "crop")


class BadImageError(Exception):
    """An image file that cannot be decoded (truncated, corrupt, not an image)."""


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes a model input; stored in model.json so every command repeats it.

    `squish` resizes to size x size; `crop` resizes the short side to size / crop_pct and takes
    the centre (timm's evaluation transform).
    """

    size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    resize: str = "squish"
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}.")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize {self.resize!r} is not one of {', '.join(RESIZE_MODES)}.")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Preprocessing:
        raw = dict(raw)
        raw["mean"], raw["std"] = tuple(raw["mean"]), tuple(raw["std"])
        return cls(**raw)


def _to_uint8_array(image: Image.Image) -> np.ndarray:
    """High-bit-depth single-channel modes (I;16, I, F) scaled to 0..255 rather than clipped."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        scale = 65535.0
    elif image.mode == "F":
        scale = 1.0 if array.size and float(array.max()) <= 1.0 else 255.0
    else:  # "I": 32-bit ints, usually a 16-bit PNG
        scale = 65535.0 if array.size and int(array.max()) > 255 else 255.0
    return np.clip(array.astype(np.float64) / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)


def open_rgb(path: str | Path) -> Image.Image:
    """Decode `path` fully as RGB: EXIF orientation applied; alpha composited onto white;
    palette, L, LA, CMYK, 16-bit and float images converted. Raises BadImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-transparency and EXIF chatter from Pillow
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                mode = image.mode
                if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                    image = Image.fromarray(_to_uint8_array(image), mode="L")
                elif mode == "P":
                    image = image.convert("RGBA")
                if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
                    image = image.convert("RGBA")
                    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, image)
                return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"{path}: {exc}") from exc


def _resize(image: Image.Image, prep: Preprocessing) -> Image.Image:
    method = INTERPOLATIONS[prep.interpolation]
    size = prep.size
    if prep.resize == "squish":
        return image if image.size == (size, size) else image.resize((size, size), method)
    scaled = max(size, math.floor(size / prep.crop_pct + 1e-6))  # timm's eval transform: floor(size / crop_pct)
    width, height = image.size
    ratio = scaled / min(width, height)
    new_w, new_h = max(size, round(width * ratio)), max(size, round(height * ratio))
    image = image.resize((new_w, new_h), method)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(path: str | Path, prep: Preprocessing) -> np.ndarray:
    """The uint8 array (3, size, size) a model sees for `path`, before normalisation."""
    array = np.asarray(_resize(open_rgb(path), prep), dtype=np.uint8)
    return np.ascontiguousarray(array.transpose(2, 0, 1))
