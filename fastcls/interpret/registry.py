"""The interpretation plots, by name: what `--only` selects from and what report.md indexes.

A new plot is one entry here: a function `Context -> [paths written]` plus the file names it
may write under plots/ (each carries its entry's key word so tools can find it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastcls.registry import Registry

if TYPE_CHECKING:
    from fastcls.interpret.context import Context

__all__ = ["PLOTS", "Plot"]


def _lazy(module: str, name: str) -> Callable[[Context], list[Path]]:
    """A plot function imported when first called, so `fastcls --help` (which lists the plot names)
    does not load the nine plot modules."""

    def draw(ctx: Context) -> list[Path]:
        return getattr(importlib.import_module(f"fastcls.interpret.{module}"), name)(ctx)

    draw.__name__ = draw.__qualname__ = name
    return draw


cam_plot = _lazy("cam", "cam_plot")
classification_report_plot = _lazy("confusion", "classification_report_plot")
confusion_pairs_plot = _lazy("confusion", "confusion_pairs_plot")
confusion_plot = _lazy("confusion", "confusion_plot")
curves_plot = _lazy("curves", "curves_plot")
pca_plot = _lazy("embeddings", "pca_plot")
tsne_plot = _lazy("embeddings", "tsne_plot")
filters_plot = _lazy("filters", "filters_plot")
guided_plot = _lazy("guided", "guided_plot")
grid_plot = _lazy("predictions", "grid_plot")
top_losses_plot = _lazy("predictions", "top_losses_plot")


@dataclass(frozen=True)
class Plot:
    name: str
    draw: Callable[[Context], list[Path]]
    files: tuple[str, ...]  # every file `draw` may write under plots/, in report order
    title: str
    caption: str


PLOTS: Registry[Plot] = Registry(
    "plot",
    {
        plot.name: plot
        for plot in (
            Plot(
                "confusion",
                confusion_plot,
                ("confusion.png", "confusion_full.png", "confusion.csv"),
                "Confusion matrix",
                "Counts and row-normalised shares (each row: where that true class's images went). With many "
                "classes, the most-confused classes; the full normalised matrix is confusion_full.png.",
            ),
            Plot(
                "classification_report",
                classification_report_plot,
                ("classification_report.png", "classification_report.csv"),
                "Classification report",
                "Precision, recall, F1 and support per class (scikit-learn), with macro and weighted averages.",
            ),
            Plot(
                "confusion_pairs",
                confusion_pairs_plot,
                ("confusion_pairs.png", "confusion_pairs.csv"),
                "Most-confused pairs",
                "The most frequent mistakes, as true → predicted class.",
            ),
            Plot(
                "top_losses",
                top_losses_plot,
                ("top_losses.png",),
                "Top losses",
                "The images with the highest loss: predicted and true class with their probabilities.",
            ),
            Plot(
                "curves",
                curves_plot,
                ("curves.png",),
                "Training curves",
                "Loss, accuracy and learning rate per epoch, from metrics.csv; training phases shaded.",
            ),
            Plot(
                "grid",
                grid_plot,
                ("grid.png",),
                "Sample predictions",
                "A 10×3 grid of images spread over the classes; green ✓ right, red ✗ wrong.",
            ),
            Plot(
                "pca",
                pca_plot,
                ("pca.png", "pca_epochs.png", "pca.csv"),
                "PCA of penultimate features",
                "The features the classifier layer sees, on their first two principal components, coloured by "
                "true class; circled points are misclassified. pca_epochs.png: the same during training.",
            ),
            Plot(
                "tsne",
                tsne_plot,
                ("tsne.png", "tsne_epochs.png", "tsne.csv"),
                "t-SNE of penultimate features",
                "A t-SNE map of the same features: tight, separate clusters mean classes the model tells apart.",
            ),
            Plot(
                "cam",
                cam_plot,
                ("cam.png",),
                "Grad-CAM and Grad-CAM++",
                "Where the predicted class's evidence lies, at the last convolutional stage (or --layer).",
            ),
            Plot(
                "guided",
                guided_plot,
                ("guided.png",),
                "Guided backpropagation",
                "For the most active units of the layer: the images that excite each most, and the pixels that "
                "drive it (guided gradients).",
            ),
            Plot(
                "filters",
                filters_plot,
                ("filters.png", "filters_activations.png"),
                "First-layer filters",
                "The first convolution's filters, and the map each makes of one image.",
            ),
        )
    },
    hint=" (--only takes a comma-separated list)",
)
