"""Confusion matrix (counts and row-normalised), classification report, most-confused pairs.

With many classes a full matrix is unreadable, so past `FULL_LIMIT` classes the plot shows the
sub-matrix of the `TOP_K` classes most involved in mistakes, and the whole normalised matrix
goes to `confusion_full.png` without numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastcls.interpret.context import Context
from fastcls.interpret.draw import figure, pyplot, save, short, write_csv

__all__ = [
    "FULL_LIMIT",
    "TOP_K",
    "classification_report_plot",
    "classification_rows",
    "confused_pairs",
    "confusion_pairs_plot",
    "confusion_plot",
    "most_confused_classes",
]

FULL_LIMIT = 20  # up to this many classes the whole matrix is drawn with numbers
TOP_K = 15  # classes in the most-confused sub-matrix beyond that
WORST_ROWS = 30  # classification-report rows drawn as an image when there are more classes


def most_confused_classes(confusion: Any, k: int = TOP_K) -> list[int]:
    """The `k` classes with the most mistakes, as true or as predicted class, in class order."""
    import numpy as np

    off = confusion - np.diag(np.diag(confusion))
    involvement = off.sum(axis=0) + off.sum(axis=1)
    chosen = np.argsort(-involvement, kind="stable")[:k]
    return sorted(int(c) for c in chosen)


def _row_normalised(confusion: Any) -> Any:
    import numpy as np

    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)


def _matrix(ax: Any, values: Any, names: list[str], title: str, fmt: str, vmax: float, annotate: bool) -> None:
    plt = pyplot()
    n = len(names)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=max(vmax, 1e-9), interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, shrink=0.82, label="images" if fmt == "d" else "share of the true class")
    ax.set_title(title)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 60:
        fontsize = 10 if n <= 12 else max(5, 10 - (n - 12) // 4)
        ax.set_xticks(range(n), [short(c) for c in names], fontsize=fontsize)
        ax.set_yticks(range(n), [short(c) for c in names], fontsize=fontsize)
        if max(len(c) for c in names) > 3:
            plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    if not annotate:
        return
    size = 9 if n <= 10 else 7 if n <= 16 else 6
    for (row, col), value in _cells(values):
        if value == 0 and row != col:
            continue
        text = format(value, fmt) if fmt != "pct" else f"{100 * value:.0f}%"
        colour = "white" if value > 0.55 * vmax else "black"
        ax.text(col, row, text, ha="center", va="center", color=colour, fontsize=size)


def _cells(values: Any):
    for row in range(values.shape[0]):
        for col in range(values.shape[1]):
            yield (row, col), values[row, col]


def confusion_plot(ctx: Context) -> list[Path]:
    """confusion.png (counts and row-normalised side by side), confusion.csv (all counts), and
    confusion_full.png when there are more than FULL_LIMIT classes."""
    import numpy as np

    confusion, classes = ctx.confusion, ctx.classes
    normalised = _row_normalised(confusion)
    written = [
        write_csv(
            ctx.plots / "confusion.csv",
            ["true \\ predicted", *classes],
            ([name, *map(int, row)] for name, row in zip(classes, confusion, strict=True)),
        )
    ]
    if len(classes) > FULL_LIMIT:
        keep = most_confused_classes(confusion)
        counts, shares = confusion[np.ix_(keep, keep)], normalised[np.ix_(keep, keep)]
        names = [classes[i] for i in keep]
        scope = f"the {len(keep)} most-confused of {len(classes)} classes (mistakes into others not shown)"
    else:
        counts, shares, names, scope = confusion, normalised, classes, f"{len(classes)} classes"
    side = max(5.0, 0.42 * len(names) + 2.5)
    fig, axes = figure(1, 2, 2 * side + 1.5, side)
    left, right = axes[0]
    _matrix(left, counts, names, "Counts", "d", float(counts.max()), annotate=True)
    _matrix(right, shares, names, "Row-normalised (share of each true class)", "pct", 1.0, annotate=True)
    fig.suptitle(f"Confusion matrix: {ctx.split} split, {ctx.n} images, {scope}, accuracy {100 * ctx.accuracy:.1f}%")
    written.insert(0, save(fig, ctx.plots / "confusion.png"))
    if len(classes) > FULL_LIMIT:
        fig, axes = figure(1, 1, 10, 9)
        ax = axes[0, 0]
        _matrix(ax, normalised, classes, "Row-normalised confusion, all classes", "pct", 1.0, annotate=False)
        if len(classes) > 60:
            ax.set_xlabel("predicted class (index)")
            ax.set_ylabel("true class (index)")
        fig.suptitle(f"{ctx.split} split, {ctx.n} images, {len(classes)} classes")
        written.insert(1, save(fig, ctx.plots / "confusion_full.png"))
    return written


def classification_rows(ctx: Context) -> list[dict[str, Any]]:
    """Per class and averaged precision, recall, F1 and support, as scikit-learn reports them."""
    from sklearn.metrics import classification_report

    report = classification_report(
        ctx.labels,
        ctx.predicted,
        labels=list(range(len(ctx.classes))),
        target_names=ctx.classes,
        output_dict=True,
        zero_division=0,
    )
    rows = []
    for name in [*ctx.classes, "macro avg", "weighted avg"]:
        scores = report[name]
        rows.append(
            {
                "class": name,
                "precision": float(scores["precision"]),
                "recall": float(scores["recall"]),
                "f1": float(scores["f1-score"]),
                "support": int(scores["support"]),
            }
        )
    return rows


def classification_report_plot(ctx: Context) -> list[Path]:
    """classification_report.png (a coloured table) and classification_report.csv (every class)."""
    import numpy as np

    rows = classification_rows(ctx)
    csv_path = write_csv(
        ctx.plots / "classification_report.csv",
        ["class", "precision", "recall", "f1", "support"],
        ([r["class"], r["precision"], r["recall"], r["f1"], r["support"]] for r in rows),
    )
    per_class, averages = rows[:-2], rows[-2:]
    note = ""
    if len(per_class) > WORST_ROWS:
        per_class = sorted(per_class, key=lambda r: (r["f1"], r["class"]))[:WORST_ROWS]
        note = f"\nthe {WORST_ROWS} lowest-F1 of {len(rows) - 2} classes (all in classification_report.csv)"
    shown = [*per_class, *averages]
    values = np.array([[r["precision"], r["recall"], r["f1"]] for r in shown])
    height = max(3.0, 0.32 * len(shown) + 1.6)
    fig, axes = figure(1, 1, 7.5, height)
    ax = axes[0, 0]
    image = ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="score (precision, recall, F1)")
    for (row, col), value in _cells(values):
        ax.text(col, row, f"{value:.3f}", ha="center", va="center", fontsize=9)
    for row, r in enumerate(shown):
        ax.text(3.0, row, str(r["support"]), ha="center", va="center", fontsize=9)
    ax.axhline(len(per_class) - 0.5, color="black", linewidth=1.5)
    ax.set_xlim(-0.5, 3.5)
    ax.set_xticks(range(4), ["precision", "recall", "F1", "support"])
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(shown)), [short(r["class"], 20) for r in shown])
    ax.set_ylabel("class")
    ax.set_title(
        f"Classification report: {ctx.split} split, {ctx.n} images, accuracy {100 * ctx.accuracy:.1f}%{note}",
        fontsize=10,
    )
    return [save(fig, ctx.plots / "classification_report.png"), csv_path]


def confused_pairs(ctx: Context, top: int = 10) -> list[dict[str, Any]]:
    """The `top` (true, predicted) pairs with the most mistakes, most first; none when all are right."""
    import numpy as np

    confusion = ctx.confusion
    support = confusion.sum(axis=1)
    pairs = [
        (int(confusion[t, p]), t, p)
        for t in range(len(ctx.classes))
        for p in range(len(ctx.classes))
        if t != p and confusion[t, p] > 0
    ]
    pairs.sort(key=lambda item: (-item[0], item[1], item[2]))
    return [
        {
            "true": ctx.classes[t],
            "predicted": ctx.classes[p],
            "count": count,
            "share": float(count / support[t]) if support[t] else float(np.nan),
        }
        for count, t, p in pairs[:top]
    ]


def confusion_pairs_plot(ctx: Context) -> list[Path]:
    """confusion_pairs.png (bars: the most frequent true -> predicted mistakes) and its CSV."""
    pairs = confused_pairs(ctx)
    csv_path = write_csv(
        ctx.plots / "confusion_pairs.csv",
        ["true", "predicted", "count", "share_of_true_class"],
        ([p["true"], p["predicted"], p["count"], p["share"]] for p in pairs),
    )
    fig, axes = figure(1, 1, 7.5, max(2.5, 0.42 * len(pairs) + 1.4))
    ax = axes[0, 0]
    errors = int(ctx.confusion.sum() - ctx.confusion.trace())
    title = f"Most-confused pairs: {ctx.split} split, {ctx.n} images, {errors} errors"
    if not pairs:
        ax.text(0.5, 0.5, "No mistakes: every image was classified correctly.", ha="center", va="center", fontsize=12)
        ax.set_axis_off()
    else:
        labels = [f"true {short(p['true'])} → predicted {short(p['predicted'])}" for p in pairs]
        counts = [p["count"] for p in pairs]
        bars = ax.barh(range(len(pairs)), counts, color="#d73027", alpha=0.8)
        ax.set_yticks(range(len(pairs)), labels)
        ax.invert_yaxis()
        for bar, p in zip(bars, pairs, strict=True):
            ax.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f"  {p['count']} ({100 * p['share']:.1f}% of {short(p['true'])})",
                va="center",
                fontsize=9,
            )
        ax.set_xlim(0, max(counts) * 1.45)
        ax.set_xlabel("images")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return [save(fig, ctx.plots / "confusion_pairs.png"), csv_path]
