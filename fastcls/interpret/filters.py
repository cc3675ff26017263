"""First-layer filters as pictures, and what they respond to in one image."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fastcls.interpret.context import Context
from fastcls.interpret.draw import figure, pyplot, save, short, show_image

__all__ = ["MAX_FILTERS", "filters_plot", "first_layer_maps"]

MAX_FILTERS = 64


def first_layer_maps(model: Any, x: Any) -> tuple[str, Any]:
    """(name of the first conv layer, its (N, C, H, W) output for the normalised batch `x`)."""
    import torch

    from fastcls.models.layers import first_conv

    name, conv = first_conv(model)
    captured: list[Any] = []
    handle = conv.register_forward_hook(lambda _m, _a, out: captured.append(out.detach().float().cpu()))
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(x)
    finally:
        handle.remove()
        model.train(was_training)
    return name, captured[0]


def _grid(count: int) -> tuple[int, int]:
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def _mosaic(tiles: Any, columns: int, fill: float) -> Any:
    """Tiles (n, h, w) or (n, h, w, 3) laid out in rows of `columns` with a one-tile-pixel gap,
    as one array: one imshow instead of one axis per tile (64 axes take seconds to lay out)."""
    import numpy as np

    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / columns)
    gap = max(1, h // 4)
    shape = (rows * (h + gap) - gap, columns * (w + gap) - gap, *tiles.shape[3:])
    out = np.full(shape, fill, dtype=np.float64)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out


def _label_tiles(ax: Any, count: int, columns: int, h: int, w: int) -> None:
    gap = max(1, h // 4)
    for k in range(count):
        r, c = divmod(k, columns)
        ax.text(c * (w + gap) + w / 2 - 0.5, r * (h + gap) - 0.5, str(k), ha="center", va="bottom", fontsize=7)


def _filters_figure(ctx: Context, name: str, conv: Any) -> Path:
    """Colour data: each filter as an RGB tile. Grey data (three equal channels): the filter that
    acts on the grey image, i.e. its weights summed over RGB, on a signed colour scale."""
    import matplotlib
    import numpy as np

    weights = conv.weight.detach().float().cpu().numpy()[:MAX_FILTERS]
    in_channels, k = weights.shape[1], weights.shape[2:]
    grey = in_channels != 3 or ctx.grey
    rows, columns = _grid(len(weights))
    if grey:
        tiles = weights.sum(axis=1)
        tiles = tiles / np.maximum(np.abs(tiles).reshape(len(tiles), -1).max(axis=1), 1e-12)[:, None, None]
        style: dict[str, Any] = {
            "cmap": matplotlib.colormaps["RdBu_r"].with_extremes(bad="white"),
            "vmin": -1,
            "vmax": 1,
        }
        mosaic = _mosaic(tiles, columns, np.nan)
    else:
        tiles = weights.transpose(0, 2, 3, 1)
        low = tiles.reshape(len(tiles), -1).min(axis=1)[:, None, None, None]
        high = tiles.reshape(len(tiles), -1).max(axis=1)[:, None, None, None]
        style = {}
        mosaic = _mosaic((tiles - low) / np.maximum(high - low, 1e-12), columns, 1.0)
    fig, axes = figure(1, 1, min(1.0 * columns + (1.6 if grey else 0.6), 12), min(1.0 * rows + 1.3, 12))
    ax = axes[0, 0]
    image = ax.imshow(mosaic, interpolation="nearest", **style)
    _label_tiles(ax, len(tiles), columns, *tiles.shape[1:3])
    ax.set_axis_off()
    more = f", first {MAX_FILTERS} shown" if conv.out_channels > MAX_FILTERS else ""
    how = (
        "weights summed over RGB (the images are greyscale),\neach filter scaled to its largest |weight|"
        if grey
        else "RGB weights, each filter scaled to its own range"
    )
    fig.suptitle(
        f"First-layer filters at {name}: {conv.out_channels} filters of {in_channels}×{k[0]}×{k[1]}{more}\n{how}",
        fontsize=10,
    )
    if grey:
        fig.colorbar(image, ax=ax, shrink=0.7, label="weight / max |weight|")
    return save(fig, ctx.plots / "filters.png")


def _maps_figure(ctx: Context, name: str) -> Path:
    import matplotlib
    import numpy as np

    confident = np.flatnonzero(ctx.predicted == ctx.labels)
    pool = confident if len(confident) else np.arange(ctx.n)
    index = int(pool[np.argmax(ctx.probs[pool, ctx.predicted[pool]])])
    _, maps = first_layer_maps(ctx.model, ctx.normalised([index]))
    maps = maps[0, :MAX_FILTERS].numpy()
    rows, columns = _grid(len(maps))
    limit = float(np.abs(maps).max()) or 1.0
    width = min(1.1 * columns + 1.2, 13)
    fig = pyplot().figure(figsize=(width + 2.2, min(1.1 * rows + 1.3, 13)), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[2.0, width])
    show_image(left, ctx.images[index])
    left.set_title(f"input ({short(ctx.classes[int(ctx.labels[index])])})", fontsize=9)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    interpolation = "nearest" if maps.shape[-1] < 64 else "antialiased"
    image = right.imshow(
        _mosaic(maps, columns, np.nan), cmap=cmap, vmin=-limit, vmax=limit, interpolation=interpolation
    )
    _label_tiles(right, len(maps), columns, *maps.shape[1:])
    right.set_axis_off()
    fig.suptitle(
        f"Activation maps of the first layer ({name}) for one {ctx.split} image\n"
        "one map per filter (numbered as in filters.png), shared scale: red positive, blue negative",
        fontsize=10,
    )
    fig.colorbar(image, ax=right, shrink=0.7, label="conv output")
    return save(fig, ctx.plots / "filters_activations.png")


def filters_plot(ctx: Context) -> list[Path]:
    """filters.png: the first conv layer's filters; filters_activations.png: one image (the most
    confidently right one) and the map each of those filters makes of it."""
    from fastcls.models.layers import first_conv

    name, conv = first_conv(ctx.model)
    return [_filters_figure(ctx, name, conv), _maps_figure(ctx, name)]
