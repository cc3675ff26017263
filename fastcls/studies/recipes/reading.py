"""A recipe file read and checked before anything runs: its steps, their ids and keys, `${step.key}`
references, and the overrides given on the command line.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.errors import did_you_mean

if TYPE_CHECKING:
    pass
from fastcls.studies.recipes.steps import ID, REFERENCE, STEPS, TOP_LEVEL, RecipeError

__all__ = [
    "Recipe",
    "Step",
    "is_recipe",
    "load_recipe",
    "parse_override",
    "references",
]


# -- the recipe file ----------------------------------------------------------------------------
@dataclass
class Step:
    """A step as written: `settings` may still hold `${...}` references."""

    id: str
    command: str
    label: str
    settings: dict[str, Any]


@dataclass
class Recipe:
    name: str
    description: str
    path: Path
    settings: dict[str, Any]
    steps: list[Step]
    report: dict[str, Any]
    smoke: dict[str, Any]

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)


def is_recipe(path: str | Path) -> bool:
    """True for a TOML file with a [recipe] table or [[steps]] (a run's config.toml has neither)."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return "recipe" in raw or "steps" in raw


def parse_override(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` -> (KEY, VALUE read as a TOML value when it is one, else the text)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {text!r} is not KEY=VALUE, e.g. --set epochs=1 or --set grid.fractions='[\"1/8\"]'.")
    try:
        return key, tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value.strip()


def references(value: Any) -> list[tuple[str, str | None]]:
    if isinstance(value, str):
        return [(m.group(1), m.group(2)) for m in REFERENCE.finditer(value)]
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in references(v)]
    if isinstance(value, list | tuple):
        return [r for v in value for r in references(v)]
    return []


def _apply_override(recipe: Recipe, key: str, value: Any, source: str) -> None:
    head, dot, rest = key.partition(".")
    ids = [s.id for s in recipe.steps]
    if dot and head in ids:
        step = recipe.step(head)
        _check_keys(step.id, step.command, {rest: value}, source)
        step.settings[rest] = value
        return
    takers = [s for s in recipe.steps if key in STEPS[s.command].keys]
    if not takers:
        every = sorted({k for s in recipe.steps for k in STEPS[s.command].keys})
        raise RecipeError(
            f"{source} {key!r}: no step of this recipe takes {key!r} (steps: {', '.join(ids)}); use STEP.KEY for "
            f"one step.{did_you_mean(key, every + [f'{i}.' for i in ids])}"
        )
    recipe.settings[key] = value
    for step in recipe.steps:
        if key in step.settings:
            step.settings[key] = value


def _check_keys(step_id: str, command: str, settings: Mapping[str, Any], where: str) -> None:
    kind = STEPS[command]
    unknown = sorted(set(settings) - kind.keys)
    if unknown:
        raise RecipeError(
            f"{where}: step {step_id!r} ({command}) does not take {', '.join(unknown)}."
            f"{did_you_mean(unknown[0], kind.keys)} It takes: {', '.join(sorted(kind.keys))}."
        )


def load_recipe(path: str | Path, overrides: Sequence[str] = (), smoke: bool = False) -> Recipe:
    """Read and check a recipe: commands, settings, references (only to earlier steps), overrides.

    Every mistake is found here, before the first step trains: a 15-minute recipe should not
    fail at minute 12 on a typo.
    """
    from fastcls.config import read_toml

    path = Path(path)
    raw = read_toml(path, "recipe", "; the shipped ones are in tasks/", RecipeError)
    where = str(path)
    extra = sorted(set(raw) - set(TOP_LEVEL))
    if extra:
        raise RecipeError(f"{where}: unknown table {extra[0]!r}; a recipe has {', '.join(TOP_LEVEL)}.")
    head = raw.get("recipe", {})
    name = head.get("name") or path.stem
    if not isinstance(name, str) or "/" in name:
        raise RecipeError(f"{where}: [recipe] name must be a plain name, not {name!r}.")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise RecipeError(f"{where}: no steps; add [[steps]] tables, each with a command ({', '.join(STEPS)}).")
    commands = [s.get("command") for s in steps_raw if isinstance(s, dict)]
    steps: list[Step] = []
    for n, entry in enumerate(steps_raw, 1):
        if not isinstance(entry, dict) or "command" not in entry:
            raise RecipeError(f"{where}: step {n} has no command; give one of {', '.join(STEPS)}.")
        entry = dict(entry)
        command = entry.pop("command")
        STEPS.lookup(command, prefix=f"{where}: step {n} ", error=RecipeError)
        step_id = entry.pop("id", None) or (command if commands.count(command) == 1 else None)
        if step_id is None:
            raise RecipeError(f'{where}: several steps run {command!r}; give each an id (id = "small").')
        if not ID.match(step_id) or step_id in {s.id for s in steps}:
            raise RecipeError(f"{where}: step id {step_id!r} must be unique and a plain name (letters, digits, -, _).")
        label = str(entry.pop("label", step_id))
        _check_keys(step_id, command, entry, where)
        steps.append(Step(step_id, command, label, entry))
    settings = dict(raw.get("settings", {}))
    recipe = Recipe(name, str(head.get("description", "")), path, settings, steps, dict(raw.get("report", {})),
                    dict(raw.get("smoke", {})))  # fmt: skip
    for key in settings:
        if not any(key in STEPS[s.command].keys for s in steps):
            raise RecipeError(f"{where}: [settings] {key!r} is taken by no step ({', '.join(s.id for s in steps)}).")
    if smoke:
        if not recipe.smoke:
            raise RecipeError(f"{where} has no [smoke] table, so there is no tiny version; use --set instead.")
        for key, value in recipe.smoke.items():
            if isinstance(value, dict) and key in {s.id for s in steps}:
                for inner, v in value.items():
                    _apply_override(recipe, f"{key}.{inner}", v, f"{where} [smoke]")
            else:
                _apply_override(recipe, key, value, f"{where} [smoke]")
    for text in overrides:
        _apply_override(recipe, *parse_override(text), "--set")
    seen: list[str] = []
    for step in steps:
        for ref, _ in references(step.settings):
            if ref not in seen:
                later = " (it runs later)" if ref in {s.id for s in steps} else ""
                raise RecipeError(
                    f"{where}: step {step.id!r} refers to ${{{ref}}}{later}; it can use earlier steps: "
                    f"{', '.join(seen) or 'none'}."
                )
        seen.append(step.id)
    for key in ("steps",):
        unknown = [s for s in recipe.report.get(key, []) if s not in seen]
        if unknown:
            raise RecipeError(f"{where}: [report] steps names {unknown[0]!r}, which is not a step ({', '.join(seen)}).")
    return recipe
