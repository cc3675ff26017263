"""Drawing helpers shared by the interpretation plots: images as the model saw them, class
colours that stay distinguishable, right/wrong marks, and atomic PNG/CSV writes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fastcls.plots import pyplot, save_figure
from fastcls.runs import atomic_write_text

__all__ = [
    "CORRECT",
    "WRONG",
    "class_colours",
    "figure",
    "frame",
    "pyplot",
    "save",
    "short",
    "show_image",
    "write_csv",
]

CORRECT, WRONG = "#1a9850", "#d73027"


def figure(rows: int = 1, columns: int = 1, width: float = 6.0, height: float = 4.5) -> tuple[Any, Any]:
    """(fig, 2-d array of axes) with constrained layout, which keeps titles, colour bars and
    outside legends from overlapping (tight_layout does not with colour bars and suptitles)."""
    return pyplot().subplots(rows, columns, figsize=(width, height), dpi=100, squeeze=False, layout="constrained")


def save(fig: Any, path: Path) -> Path:
    """Write the figure as PNG atomically and close it."""
    return save_figure(fig, path)


def short(name: str, limit: int = 14) -> str:
    """A class name cut to fit under a thumbnail."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def to_hwc(image: Any) -> Any:
    """uint8 (3, H, W) tensor or array -> (H, W, 3) numpy."""
    import numpy as np

    array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    return array.transpose(1, 2, 0)


def show_image(ax: Any, image: Any, **kwargs: Any) -> None:
    """Show a uint8 (3, H, W) image un-normalised; grey images in grey, small ones without blur."""
    hwc = to_hwc(image)
    grey = bool((hwc[..., 0] == hwc[..., 1]).all() and (hwc[..., 1] == hwc[..., 2]).all())
    interpolation = "nearest" if max(hwc.shape[:2]) < 64 else "antialiased"
    if grey:
        ax.imshow(hwc[..., 0], cmap="gray", vmin=0, vmax=255, interpolation=interpolation, **kwargs)
    else:
        ax.imshow(hwc, interpolation=interpolation, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def frame(ax: Any, colour: str, width: float = 3.0) -> None:
    """A coloured border round an image axis (green right, red wrong)."""
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def class_colours(n: int) -> list[Any]:
    """Distinct colours: tab10 up to 10 classes, tab20 up to 20, a continuous map beyond."""
    import matplotlib

    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A small CSV beside the plot: the numbers behind it, for a report's tables or a test."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)
