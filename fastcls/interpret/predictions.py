"""Images with their predictions: the highest-loss images, and a 10x3 grid of sample predictions."""

from __future__ import annotations

import math
from pathlib import Path

from fastcls.interpret.context import Context
from fastcls.interpret.draw import CORRECT, WRONG, figure, frame, save, short, show_image

__all__ = ["GRID_COLUMNS", "GRID_ROWS", "grid_plot", "top_losses_plot"]

GRID_ROWS, GRID_COLUMNS = 10, 3


def top_losses_plot(ctx: Context) -> list[Path]:
    """top_losses.png: the `images` images the model got most wrong (highest cross-entropy),
    each with predicted and actual class, its loss and the probability of each."""
    import numpy as np

    count = min(max(ctx.options.images, 1), ctx.n)
    order = np.argsort(-ctx.losses, kind="stable")[:count]
    columns = min(4, count)
    rows = math.ceil(count / columns)
    fig, axes = figure(rows, columns, 2.4 * columns, 3.0 * rows + 0.6)
    for ax in axes.flat[count:]:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, order, strict=False):
        truth, guess = int(ctx.labels[i]), int(ctx.predicted[i])
        show_image(ax, ctx.images[i])
        colour = CORRECT if truth == guess else WRONG
        frame(ax, colour)
        ax.set_title(
            f"pred {short(ctx.classes[guess])} ({ctx.probs[i, guess]:.2f})\n"
            f"true {short(ctx.classes[truth])} ({ctx.probs[i, truth]:.2f})\nloss {ctx.losses[i]:.2f}",
            fontsize=9,
            color=colour,
        )
    fig.suptitle(
        f"Top {count} losses on the {ctx.split} split: predicted (its probability) / true (its probability) / loss",
        fontsize=11,
    )
    return [save(fig, ctx.plots / "top_losses.png")]


def grid_plot(ctx: Context) -> list[Path]:
    """grid.png: 10 rows x 3 columns of sample images spread over the classes, each titled with
    true and predicted class; green frame right, red frame and a cross wrong."""
    chosen = ctx.sample(GRID_ROWS * GRID_COLUMNS, salt=1)
    fig, axes = figure(GRID_ROWS, GRID_COLUMNS, 6.0, 2.2 * GRID_ROWS + 0.7)
    for ax in axes.flat[len(chosen) :]:
        ax.set_axis_off()
    wrong = 0
    for ax, i in zip(axes.flat, chosen, strict=False):
        truth, guess = int(ctx.labels[i]), int(ctx.predicted[i])
        right = truth == guess
        wrong += not right
        show_image(ax, ctx.images[i])
        frame(ax, CORRECT if right else WRONG)
        mark = "✓" if right else "✗"
        ax.set_title(
            f"{mark} true {short(ctx.classes[truth])}\npred {short(ctx.classes[guess])} ({ctx.probs[i, guess]:.2f})",
            fontsize=9,
            color=CORRECT if right else WRONG,
        )
    fig.suptitle(
        f"Predictions on {len(chosen)} {ctx.split} images ({wrong} wrong)\ngreen ✓ right, red ✗ wrong",
        fontsize=11,
    )
    return [save(fig, ctx.plots / "grid.png")]
