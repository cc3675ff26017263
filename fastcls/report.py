"""report.md for a run: what was trained, on what, how it went, and how to repeat it."""

from __future__ import annotations

from typing import Any

from fastcls.config import Config

__all__ = ["run_report"]


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, int | float) else "n/a"


def run_report(card: dict[str, Any], history: list[dict[str, Any]], config: Config) -> str:
    metrics = card.get("metrics", {})
    prep = card["preprocessing"]
    lines = [
        f"# {config.run.name or card['arch']}",
        "",
        f"- model: `{card['arch']}` ({card['family']}), {card['num_classes']} classes",
        f"- data: `{card['data']}`; input {prep['size']}px ({prep['resize']}, {prep['interpolation']})",
        f"- training: {card['epochs']} epochs, one-cycle AdamW, lr {config.train.lr:g}, "
        f"wd {config.train.wd:g}, batch {config.data.bs}, seed {config.train.seed}",
        f"- validation accuracy (last epoch): {_pct(metrics.get('accuracy'))}; "
        f"best: {_pct(max((r['accuracy'] for r in history), default=None))}",
    ]
    if "test_accuracy" in metrics:
        lines.append(f"- test accuracy: {_pct(metrics['test_accuracy'])} (top-5 {_pct(metrics.get('test_top5'))})")
    if metrics.get("skipped_images"):
        lines.append(f"- unreadable images skipped: {metrics['skipped_images']}")
    lines += [
        "",
        "| epoch | train_loss | valid_loss | accuracy | top5 | lr | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in history:
        lines.append(
            f"| {row['epoch']} | {row['train_loss']:.4f} | {row['valid_loss']:.4f} | "
            f"{row['accuracy']:.4f} | {row['top5']:.4f} | {row['lr']:.3g} | {row['seconds']:.1f} |"
        )
    lines += [
        "",
        "![training curves](plots/curves.png)",
        "",
        "Repeat this run: `fastcls run config.toml` (from this folder).",
        "",
    ]
    return "\n".join(lines)
