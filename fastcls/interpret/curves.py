"""Training curves from the run's metrics.csv: loss, accuracy and learning rate per epoch."""

from __future__ import annotations

from pathlib import Path

from fastcls.interpret.context import Context, NothingToDraw

__all__ = ["curves_plot"]


def curves_plot(ctx: Context) -> list[Path]:
    """curves.png, redrawn from metrics.csv (phases shaded), the same file training writes."""
    from fastcls.plots import training_curves

    rows = [r for r in ctx.history if all(k in r for k in ("epoch", "train_loss", "valid_loss", "accuracy", "top5"))]
    if not rows:
        raise NothingToDraw(f"{ctx.run / 'metrics.csv'} is missing or has no epochs")
    title = f"{ctx.clf.config.model.arch} on {ctx.clf.config.data.source}: {len(rows)} epochs"
    return [training_curves(rows, ctx.plots / "curves.png", title=title)]
