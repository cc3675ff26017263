"""Running a recipe: each step in order into its folder under OUT, reusing a step already done with
the same resolved settings, then report.md with the recipe's table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.runs import atomic_write_text

if TYPE_CHECKING:
    from fastcls.reporting import Reporter
from fastcls.config import flag
from fastcls.studies.recipes.reading import Recipe, load_recipe, references
from fastcls.studies.recipes.steps import REFERENCE, STATE_FILE, STEPS, RecipeError, StepContext

__all__ = [
    "RecipeResult",
    "StepRecord",
    "format_value",
    "run_recipe",
]


# -- running ------------------------------------------------------------------------------------
@dataclass
class StepRecord:
    """A step as it ran: resolved settings, outputs, report rows, seconds, and whether it was reused."""

    id: str
    command: str
    label: str
    settings: dict[str, Any]
    outputs: dict[str, Any]
    rows: list[dict[str, Any]]
    seconds: float
    reused: bool = False


@dataclass
class RecipeResult:
    """The recipe's outcome: each step's record and the one result table of report.md."""

    name: str
    description: str
    out: Path
    steps: list[StepRecord]
    columns: list[str]
    table: list[dict[str, Any]]
    headline: str
    seconds: float
    report: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "out": str(self.out),
            "seconds": self.seconds,
            "headline": self.headline,
            "columns": self.columns,
            "table": self.table,
            "steps": [asdict(s) for s in self.steps],
            "report": str(self.report) if self.report else None,
        }


def _substitute(value: Any, records: Mapping[str, StepRecord], step_id: str) -> Any:
    if isinstance(value, Mapping):
        return {k: _substitute(v, records, step_id) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(v, records, step_id) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(ref: str, key: str | None) -> Any:
        outputs = records[ref].outputs
        name = key or "path"
        if name not in outputs:
            raise RecipeError(
                f"step {step_id!r}: ${{{ref}.{name}}} is not an output of step {ref!r}; it has {', '.join(outputs)}."
            )
        return outputs[name]

    whole = REFERENCE.fullmatch(value)
    if whole:
        return lookup(whole.group(1), whole.group(2))
    return REFERENCE.sub(lambda m: str(lookup(m.group(1), m.group(2))), value)


def _read_state(out: Path) -> dict[str, Any]:
    file = out / STATE_FILE
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8")).get("steps", {})
    except (OSError, json.JSONDecodeError):
        return {}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _table(recipe: Recipe, records: list[StepRecord]) -> tuple[list[str], list[dict[str, Any]], str]:
    chosen = recipe.report.get("steps") or [r.id for r in records if r.rows]
    rows = [row for r in records if r.id in chosen for row in r.rows]
    columns = list(recipe.report.get("columns") or [])
    if not columns:
        for row in rows:
            columns += [k for k in row if k not in columns]
        if len({row.get("step") for row in rows}) == 1:
            columns = [c for c in columns if c != "step"]  # one step's rows: the column says nothing
    headline = ""
    metric = recipe.report.get("metric")
    if metric:
        scored = [r for r in rows if isinstance(r.get(metric), int | float)]
        lower = metric.endswith("loss")
        scored.sort(key=lambda r: r[metric], reverse=not lower)
        rows = scored + [r for r in rows if r not in scored]
        if scored:
            best = scored[0]
            who = next((format_value(best[k]) for k in columns if k != metric and best.get(k) is not None), "")
            headline = f"Best by {metric}: {who} ({metric} {format_value(best[metric])})."
    return columns, rows, headline


def format_value(value: Any) -> str:
    """A table cell: floats to 4 decimals, lists joined, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        if abs(value) >= 10:  # seconds, counts
            return f"{value:.1f}"
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ", ".join(map(format_value, value))
    return str(value)


def _markdown(recipe: Recipe, result: RecipeResult, overrides: Sequence[str], smoke: bool) -> str:
    lines = [f"# {recipe.name}", ""]
    if recipe.description:
        lines += [recipe.description.strip(), ""]
    title = recipe.report.get("title", "Result")
    lines += [f"## {title}", ""]
    if result.headline:
        lines += [result.headline, ""]
    if result.table:
        lines.append("| " + " | ".join(result.columns) + " |")
        lines.append("|" + "|".join("---:" if _numeric(result.table, c) else "---" for c in result.columns) + "|")
        for row in result.table:
            lines.append("| " + " | ".join(format_value(row.get(c)).replace("|", "/") for c in result.columns) + " |")
    else:
        lines.append("(no step produced rows)")
    lines += ["", "## Steps", "", "| step | command | seconds | output |", "|---|---|---:|---|"]
    for record in result.steps:
        note = " (reused)" if record.reused else ""
        lines.append(
            f"| {record.id} | {record.command} | {record.seconds:.0f}{note} | {record.outputs.get('path', '')} |"
        )
    flags = " --smoke" if smoke else ""
    flags += "".join(f" --set {o}" for o in overrides)
    lines += [
        "",
        f"Total: {result.seconds:.0f} s. Repeat with: `fastcls run {recipe.path}{flags} {flag('out')} {result.out}` "
        "(steps already done are reused).",
        "",
    ]
    return "\n".join(lines)


def _numeric(rows: list[dict[str, Any]], column: str) -> bool:
    values = [r.get(column) for r in rows if r.get(column) is not None]
    return bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def run_recipe(
    recipe: Recipe | str | Path,
    out: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    smoke: bool = False,
    reporter: Reporter | str | None = "quiet",
) -> RecipeResult:
    """Run every step of a recipe into `out` (default `runs/recipes/<name>`) and write report.md.

    >>> result = run_recipe("tasks/vote-three.toml", smoke=True)  # doctest: +SKIP
    >>> result.table[-1]["member"], result.report  # doctest: +SKIP
    ('hard vote', PosixPath('runs/recipes/vote-three/report.md'))
    """
    from fastcls.reporting import as_reporter

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides, smoke)
    out = Path(out).expanduser() if out else Path("runs") / "recipes" / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    report = as_reporter(reporter)
    state = _read_state(out)
    records: dict[str, StepRecord] = {}
    ran: set[str] = set()  # steps run in this call: what refers to them runs again too
    start = time.perf_counter()
    for n, step in enumerate(recipe.steps, 1):
        kind = STEPS[step.command]
        shared = {k: v for k, v in recipe.settings.items() if k in kind.keys}
        settings = _jsonable(_substitute(shared | step.settings, records, step.id))
        previous = state.get(step.id)
        fresh_inputs = not ({ref for ref, _ in references(shared | step.settings)} & ran)
        same = previous and previous.get("command") == step.command and previous.get("settings") == settings
        if same and fresh_inputs:
            records[step.id] = StepRecord(**(previous | {"reused": True}))
            report.info(f"step {n}/{len(recipe.steps)} {step.id} ({step.command}): done before, reused")
            continue
        folder = out / step.id
        if folder.exists() and any(folder.iterdir()):
            if previous is None:
                raise RecipeError(
                    f"step {step.id!r}: {folder} exists but was not made by this recipe; pass another {flag('out')}, "
                    "or delete that folder."
                )
            import shutil

            report.info(f"step {step.id}: its settings or inputs changed; replacing {folder}")
            shutil.rmtree(folder)
        state.pop(step.id, None)
        ran.add(step.id)
        report.info(f"step {n}/{len(recipe.steps)} {step.id} ({step.command})")
        began = time.perf_counter()
        ctx = StepContext(step.id, step.label, dict(settings), folder, recipe.path.parent, report)
        made = kind.run(ctx)
        record = StepRecord(step.id, step.command, step.label, settings, _jsonable(made.outputs),
                            _jsonable(made.rows), round(time.perf_counter() - began, 1))  # fmt: skip
        records[step.id] = record
        state[step.id] = asdict(record)
        atomic_write_text(out / STATE_FILE, json.dumps({"recipe": recipe.name, "steps": state}, indent=2) + "\n")
        report.info(f"step {step.id}: done in {record.seconds:.0f}s")
    columns, table, headline = _table(recipe, list(records.values()))
    result = RecipeResult(recipe.name, recipe.description, out, list(records.values()), columns, table, headline,
                          round(time.perf_counter() - start, 1))  # fmt: skip
    result.report = out / "report.md"
    atomic_write_text(result.report, _markdown(recipe, result, overrides, smoke))
    atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return result
