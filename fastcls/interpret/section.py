"""The "Interpretation" section of a run's report.md: tables and an index of the plots.

The section sits between two HTML comments, so running `interpret` again replaces it in place
and leaves the rest of report.md (written by training) untouched.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastcls.interpret.confusion import classification_rows, confused_pairs
from fastcls.interpret.context import Context
from fastcls.interpret.registry import PLOTS
from fastcls.runs import atomic_write_text

__all__ = ["BEGIN", "END", "interpretation_section", "write_section"]

BEGIN = "<!-- fastcls interpret: begin -->"
END = "<!-- fastcls interpret: end -->"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def interpretation_section(ctx: Context) -> str:
    """Markdown for the section: scores, classification report, confused pairs, plot index."""
    lines = [
        BEGIN,
        "## Interpretation",
        "",
        f"`fastcls interpret` on `{ctx.data}`, {ctx.split} split ({ctx.n} images"
        + (f", {ctx.skipped} unreadable skipped" if ctx.skipped else "")
        + f"): accuracy {100 * ctx.accuracy:.2f}%, mean loss {float(ctx.losses.mean()):.4f}. "
        f"Updated {datetime.now().isoformat(timespec='seconds')}.",
        "",
        "### Classification report",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in classification_rows(ctx):
        name = f"**{row['class']}**" if row["class"].endswith(" avg") else _md(row["class"])
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    lines += ["", "### Most-confused pairs", ""]
    pairs = confused_pairs(ctx)
    if pairs:
        lines += ["| true | predicted | images | share of true class |", "|---|---|---:|---:|"]
        lines += [
            f"| {_md(p['true'])} | {_md(p['predicted'])} | {p['count']} | {100 * p['share']:.1f}% |" for p in pairs
        ]
    else:
        lines.append("No mistakes on this split.")
    lines += ["", "### Plots", ""]
    for plot in PLOTS.values():
        present = [name for name in plot.files if (ctx.plots / name).is_file()]
        if not present:
            continue
        lines += [f"**{plot.title}** ({plot.name}). {plot.caption}", ""]
        for name in present:
            if name.endswith(".png"):
                lines += [f"![{plot.title}: {name}](plots/{name})", ""]
        data = [f"[{name}](plots/{name})" for name in present if not name.endswith(".png")]
        if data:
            lines += ["Data: " + ", ".join(data), ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(ctx: Context) -> Path:
    """Put the section into RUN/report.md: replace the previous one, else append it."""
    path = ctx.run / "report.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else f"# {ctx.run.name}\n"
    section = interpretation_section(ctx)
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end > start:
        rest = text[end + len(END) :].lstrip("\n")
        text = text[:start] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)
    return path
