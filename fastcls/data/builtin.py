"""Datasets that ship with fastcls's dependencies, written once as image folders.

`builtin:digits` is scikit-learn's 1,797 8x8 handwritten digits as grayscale PNGs under
`$FASTCLS_HOME/datasets/digits/{train,valid,test}/<digit>/`, with a fixed stratified 70/10/20
split so that every run and every user compares on the same test images.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastcls.data.split import stratified_split
from fastcls.errors import DataError, did_you_mean
from fastcls.registry import Registry

__all__ = ["BUILTINS", "SUGGESTED", "builtin_folder", "fastcls_home", "suggested_settings"]

_DIGITS_VERSION = "1"


def fastcls_home() -> Path:
    """The cache folder: `$FASTCLS_HOME`, default `~/.cache/fastcls`."""
    return Path(os.environ.get("FASTCLS_HOME", Path.home() / ".cache" / "fastcls")).expanduser()


def _write_digits(folder: Path) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = [str(t) for t in digits.target]
    rest, test = stratified_split(labels, 0.2, seed=0)
    train_rest, valid_rest = stratified_split([labels[i] for i in rest], 0.125, seed=0)
    split_of = {i: "test" for i in test}
    split_of.update({rest[i]: "valid" for i in valid_rest})
    split_of.update({rest[i]: "train" for i in train_rest})
    pixels = np.clip(digits.images * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)
    for index, label in enumerate(labels):
        target = folder / split_of[index] / label
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[index], mode="L").save(target / f"{index:04d}.png")


BUILTINS: Registry[tuple[str, Callable[[Path], None]]] = Registry(
    "builtin",
    {
        "digits": (_DIGITS_VERSION, _write_digits),
    },
)


# A built-in dataset's recipe per architecture, for the settings a user leaves unset (as timm's
# pretrained_cfg gives each model its input size): the global defaults suit photos, and on 8x8 digits
# they train 5 blocks at 8 px for 5 epochs. Test accuracy of `fastcls train builtin:digits`, mean of
# seeds 0-2 (2 cores, CPU): global defaults 96.7% (seed 42); size 16, 3 blocks, 64 filters, 15 epochs
# 99.16%; with aug light, 20 epochs and label smoothing 0.1, 99.35%. With PreciseBN (the default since),
# seeds 0-4 and 42: that recipe 99.44%; weight decay 0.05, 99.68%, tied with bs 32 (99.72%) and bs 32 +
# wd 0.05 (99.72%), and the best of the three at seed 42 (README, "DATA"). Any setting given overrides its entry.
SUGGESTED: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {
        "cnn": {
            "size": 16,
            "blocks": 3,
            "filters": 64,
            "epochs": 20,
            "aug": "light",
            "label_smoothing": 0.1,
            "wd": 0.05,
        },
    },
}


def suggested_settings(source: str, arch: str) -> dict[str, Any]:
    """The flat settings `SUGGESTED` has for DATA `source` (`builtin:NAME`) and `arch`; {} for any other."""
    if not source.startswith("builtin:"):
        return {}
    return dict(SUGGESTED.get(source.removeprefix("builtin:"), {}).get(arch, {}))


def builtin_folder(name: str) -> Path:
    """Write the named dataset to the cache once (atomically); its split folders (resolve_source reads them)."""
    if name not in BUILTINS:
        raise DataError(
            f"builtin:{name} is not a built-in dataset; choose one of "
            f"{', '.join('builtin:' + n for n in BUILTINS)}.{did_you_mean(name, BUILTINS)}"
        )
    version, write = BUILTINS[name]
    folder = fastcls_home() / "datasets" / name
    marker = folder / ".complete"
    if not (marker.is_file() and marker.read_text().strip() == version):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
        try:
            write(staging)
            (staging / ".complete").write_text(version)
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        except FileExistsError:  # another process finished first; its copy is as good
            pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder
