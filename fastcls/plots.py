"""Plots drawn from plain numbers (matplotlib, Agg backend); imported only when a plot is made."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from fastcls.runs import atomic_write_bytes

__all__ = ["lr_find_plot", "pyplot", "save_figure", "training_curves"]


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only; no display is needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write `fig` as PNG atomically and close it."""
    plt = pyplot()
    if fig.get_layout_engine() is None:  # figures made with layout="constrained" are laid out already
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def lr_find_plot(result: Any, path: str | Path) -> Path:
    """Loss against learning rate (log scale) with every suggestion marked and the pick labelled."""
    plt = pyplot()
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
    return save_figure(fig, path)


def _phase_spans(rows: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(phase, first epoch - 0.5, last epoch + 0.5) for each run of consecutive epochs in one phase."""
    spans: list[tuple[str, float, float]] = []
    for row in rows:
        phase, epoch = str(row.get("phase", "")), float(row["epoch"])
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], epoch + 0.5)
        else:
            spans.append((phase, epoch - 0.5, epoch + 0.5))
    return spans


def training_curves(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss (train and valid), accuracy (top-1 and top-5) and learning rate per epoch, side by side;
    when training had several phases (e.g. head only, then all layers) each is shaded and named."""
    plt = pyplot()

    epochs = [r["epoch"] for r in rows]
    lrs = [r["lr"] for r in rows if isinstance(r.get("lr"), int | float)]
    panels = 3 if len(lrs) == len(rows) else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.4), dpi=100, layout="constrained")
    loss_ax, acc_ax = axes[0], axes[1]
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    loss_ax.plot(epochs, [r["valid_loss"] for r in rows], "s-", label="valid")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    acc_ax.plot(epochs, [r["accuracy"] for r in rows], "o-", label="top-1")
    acc_ax.plot(epochs, [r["top5"] for r in rows], "s--", label="top-5")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="Accuracy", ylim=(0, 1.02))
    best = max(range(len(rows)), key=lambda i: rows[i]["accuracy"]) if rows else None
    if best is not None:
        acc_ax.plot(epochs[best], rows[best]["accuracy"], "o", ms=11, mfc="none", mec="black")
        acc_ax.annotate(
            f"best {rows[best]['accuracy']:.3f}",
            (epochs[best], rows[best]["accuracy"]),
            textcoords="offset points",
            xytext=(0, -18),
            ha="center",
            fontsize=8,
        )
    loss_ax.legend(loc="upper right")
    acc_ax.legend(loc="lower right")
    if panels == 3:
        lr_ax = axes[2]
        lr_ax.plot(epochs, lrs, "o-", color="tab:purple")
        lr_ax.set(xlabel="epoch", ylabel="LR of the last layer group, epoch end", title="Learning rate")
        if min(lrs) > 0 and max(lrs) / min(lrs) > 20:
            lr_ax.set_yscale("log")
        else:
            lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    spans = _phase_spans(rows)
    shades = ["tab:orange", "tab:blue", "tab:green", "tab:purple", "tab:brown"]
    for ax in axes:
        ax.grid(alpha=0.3)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
        if len(spans) > 1:
            for k, (_, lo, hi) in enumerate(spans):
                ax.axvspan(lo, hi, color=shades[k % len(shades)], alpha=0.1, linewidth=0)
    if len(spans) > 1:
        from matplotlib.patches import Patch

        handles = [
            Patch(color=shades[k % len(shades)], alpha=0.25, label=f"{phase}: epochs {lo + 0.5:g}–{hi - 0.5:g}")
            for k, (phase, lo, hi) in enumerate(spans)
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(spans), 6), title="training phases")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
