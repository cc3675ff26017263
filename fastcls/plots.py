"""Plots drawn from plain numbers (matplotlib, Agg backend); imported only when a plot is made."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from fastcls.runs import atomic_write_bytes

__all__ = ["lr_find_plot", "training_curves"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def lr_find_plot(result: Any, path: str | Path) -> Path:
    """Loss against learning rate (log scale) with every suggestion marked and the pick labelled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.plot(result.lrs, result.losses, color="tab:blue")
    markers = {"valley": "o", "steep": "s", "minimum": "v", "slide": "D"}
    for name, (lr, loss) in result.points.items():
        picked = " (picked)" if name == result.suggest else ""
        label = f"{name}: {result.suggestions[name]:.2e}{picked}"
        ax.plot(lr, loss, markers.get(name, "o"), markersize=9 if picked else 6, label=label)
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss", title="LR finder")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best")
    return _save(fig, path)


def training_curves(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss (train and valid) and accuracy (top-1 and top-5) per epoch, side by side."""
    plt = _pyplot()

    epochs = [r["epoch"] for r in rows]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    loss_ax.plot(epochs, [r["valid_loss"] for r in rows], "s-", label="valid")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    acc_ax.plot(epochs, [r["accuracy"] for r in rows], "o-", label="top-1")
    acc_ax.plot(epochs, [r["top5"] for r in rows], "s--", label="top-5")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="Accuracy", ylim=(0, 1.02))
    loss_ax.legend(loc="upper right")
    acc_ax.legend(loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
