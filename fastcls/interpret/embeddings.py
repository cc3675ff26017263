"""PCA and t-SNE of penultimate features, coloured by class: do the classes separate?

From the split scored now (`pca.png`, `tsne.png`, each with its CSV of coordinates) and, when
training saved snapshots (`embeddings/epoch-NNN.safetensors`, written by EmbeddingSnapshots),
one panel per epoch (`pca_epochs.png`, `tsne_epochs.png`) to show the classes pulling apart.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from fastcls.interpret.context import Context
from fastcls.interpret.draw import class_colours, figure, save, short, write_csv

__all__ = [
    "EPOCH_PANELS",
    "TSNE_LIMIT",
    "pca_coordinates",
    "pca_plot",
    "read_snapshots",
    "tsne_coordinates",
    "tsne_plot",
]

TSNE_LIMIT = 2000  # t-SNE is O(n log n) but slow on a laptop past a few thousand points
EPOCH_PANELS = 6  # epoch panels at most, evenly spaced, the last always included


def _few_threads():
    """BLAS/OpenMP limited to half the cores. Why: their threads spin-wait when the machine is
    busy; on 2 shared cores t-SNE of 359 points took 11 s with 2 threads and 1.2 s with 1, and
    PCA 5x longer. The matrices here are small, so few threads lose nothing on a big machine."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(max(1, (os.cpu_count() or 2) // 2))


def pca_coordinates(features: Any) -> tuple[Any, Any]:
    """(N, 2) coordinates on the first two principal components, and their explained variance ratios."""
    import numpy as np
    from sklearn.decomposition import PCA

    features = np.asarray(features, dtype=np.float64)
    if features.shape[1] < 2 or len(features) < 2:
        padded = np.zeros((len(features), 2))
        padded[:, : min(features.shape[1], 2)] = features[:, :2] - features[:, :2].mean(axis=0)
        return padded, np.array([1.0, 0.0])
    with _few_threads():
        pca = PCA(n_components=2, svd_solver="full").fit(features)
        return pca.transform(features), pca.explained_variance_ratio_


def tsne_coordinates(features: Any, seed: int = 0) -> Any:
    """(N, 2) t-SNE embedding (after PCA to 50 dimensions, as van der Maaten recommends)."""
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float64)
    if len(features) < 5:
        return pca_coordinates(features)[0]
    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    with _few_threads():
        if features.shape[1] > 50 and len(features) > 50:
            features = PCA(n_components=50, random_state=seed).fit_transform(features)
        return tsne.fit_transform(features)


def _scatter(ax: Any, coords: Any, labels: Any, classes: list[str], wrong: Any = None, size: float = 14) -> None:
    import numpy as np

    colours = class_colours(len(classes))
    for c in range(len(classes)):
        mask = labels == c
        if mask.any():
            ax.scatter(coords[mask, 0], coords[mask, 1], s=size, color=colours[c], label=short(classes[c]), alpha=0.8)
    if wrong is not None and np.any(wrong):
        ax.scatter(
            coords[wrong, 0], coords[wrong, 1], s=size * 3, facecolors="none", edgecolors="black", linewidths=1.0,
            label="misclassified",
        )  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(fig: Any, ax: Any, classes: list[str]) -> None:
    """A legend of class names beside the plot, or a colour bar of class indices for many classes."""
    if len(classes) <= 20:
        handles, names = ax.get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right center", title="true class", markerscale=1.6, frameon=False)
        return
    import matplotlib

    mappable = matplotlib.cm.ScalarMappable(
        norm=matplotlib.colors.Normalize(0, len(classes) - 1), cmap=matplotlib.colormaps["turbo"]
    )
    fig.colorbar(mappable, ax=fig.axes, label="true class (index in model.json; circled: misclassified)", shrink=0.8)


def _single(ctx: Context, coords: Any, labels: Any, wrong: Any, title: str, xlabel: str, ylabel: str, path: Path):
    fig, axes = figure(1, 1, 8.6 if len(ctx.classes) <= 20 else 7.8, 6.4)
    ax = axes[0, 0]
    _scatter(ax, coords, labels, ctx.classes, wrong)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    _legend(fig, ax, ctx.classes)
    return save(fig, path)


def pca_plot(ctx: Context) -> list[Path]:
    """pca.png and pca.csv: every image of the split on the first two principal components of its
    penultimate features; circled points are misclassified. Plus pca_epochs.png from snapshots."""
    coords, ratio = pca_coordinates(ctx.features)
    wrong = ctx.predicted != ctx.labels
    written = [
        _single(
            ctx,
            coords,
            ctx.labels,
            wrong,
            f"PCA of penultimate features ({ctx.features.shape[1]}-d): {ctx.split} split, {ctx.n} images",
            f"PC1 ({100 * ratio[0]:.1f}% of variance)",
            f"PC2 ({100 * ratio[1]:.1f}% of variance)",
            ctx.plots / "pca.png",
        ),
        _coordinates_csv(ctx, ctx.plots / "pca.csv", range(ctx.n), coords),
    ]
    return written + _epochs_plot(ctx, "pca")


def tsne_plot(ctx: Context) -> list[Path]:
    """tsne.png and tsne.csv: a t-SNE map of the penultimate features (up to TSNE_LIMIT images,
    spread over the classes). Plus tsne_epochs.png from snapshots."""
    import numpy as np

    chosen = ctx.sample(TSNE_LIMIT) if ctx.n > TSNE_LIMIT else np.arange(ctx.n)
    coords = tsne_coordinates(ctx.features[chosen], ctx.options.seed)
    labels = ctx.labels[chosen]
    wrong = ctx.predicted[chosen] != labels
    note = f"{len(chosen)} of {ctx.n}" if len(chosen) < ctx.n else f"{ctx.n}"
    written = [
        _single(
            ctx,
            coords,
            labels,
            wrong,
            f"t-SNE of penultimate features: {ctx.split} split, {note} images",
            "t-SNE 1",
            "t-SNE 2",
            ctx.plots / "tsne.png",
        ),
        _coordinates_csv(ctx, ctx.plots / "tsne.csv", chosen, coords),
    ]
    return written + _epochs_plot(ctx, "tsne")


def _coordinates_csv(ctx: Context, path: Path, rows: Any, coords: Any) -> Path:
    return write_csv(
        path,
        ["index", "x", "y", "true", "predicted"],
        (
            [int(i), float(x), float(y), ctx.classes[ctx.labels[i]], ctx.classes[ctx.predicted[i]]]
            for i, (x, y) in zip(rows, coords, strict=True)
        ),
    )


def read_snapshots(run: Path) -> list[tuple[int, Any, Any]]:
    """[(epoch, features (N, D) float32, labels (N,) int64)] from RUN/embeddings/, by epoch."""
    import numpy as np
    from safetensors.numpy import load_file

    found = []
    for path in sorted((Path(run) / "embeddings").glob("epoch-*.safetensors")):
        match = re.fullmatch(r"epoch-(\d+)\.safetensors", path.name)
        if not match:
            continue
        tensors = load_file(str(path))
        features = tensors["features"].astype(np.float32)
        if not np.isfinite(features).all():
            continue
        found.append((int(match.group(1)), features, tensors["labels"].astype(np.int64)))
    return sorted(found, key=lambda item: item[0])


def _pick_epochs(snapshots: list[Any], limit: int = EPOCH_PANELS) -> list[Any]:
    """At most `limit` snapshots, evenly spaced, always the first and the last."""
    if len(snapshots) <= limit:
        return snapshots
    step = (len(snapshots) - 1) / (limit - 1)
    return [snapshots[round(i * step)] for i in range(limit)]


def _epochs_plot(ctx: Context, method: str) -> list[Path]:
    snapshots = _pick_epochs(read_snapshots(ctx.run))
    if not snapshots:
        return []
    accuracy = {int(r["epoch"]): r.get("accuracy") for r in ctx.history if "epoch" in r}
    columns = min(3, len(snapshots))
    rows = math.ceil(len(snapshots) / columns)
    legend_space = 1.6 if len(ctx.classes) <= 20 else 0.8
    fig, axes = figure(rows, columns, 4.2 * columns + legend_space, 4.2 * rows + 0.6)
    for ax in axes.flat[len(snapshots) :]:
        ax.set_axis_off()
    for ax, (epoch, features, labels) in zip(axes.flat, snapshots, strict=False):
        coords = pca_coordinates(features)[0] if method == "pca" else tsne_coordinates(features, ctx.options.seed)
        _scatter(ax, coords, labels, ctx.classes, size=8)
        acc = accuracy.get(epoch)
        ax.set_title(f"epoch {epoch}" + (f" (valid accuracy {100 * acc:.1f}%)" if acc is not None else ""), fontsize=10)
    name = "PCA" if method == "pca" else "t-SNE"
    n = len(snapshots[-1][2])
    fig.suptitle(f"{name} of penultimate features during training: {n} validation images per panel")
    _legend(fig, axes.flat[0], ctx.classes)
    return [save(fig, ctx.plots / f"{method}_epochs.png")]
