"""Recipes: a whole study in one TOML file, run by `fastcls run tasks/NAME.toml`.

A recipe is a list of steps, each one command of fastcls with its settings; a later step may use
what an earlier one made through `${ID}` (the step's main output: a run folder, a sweep or study
folder) or `${ID.KEY}` (a named output, e.g. `${sweep.best}` or `${sens.csv}`):

    [recipe]
    name = "vote-three"
    description = "Three CNNs at two input sizes, then a hard vote."

    [settings]                      # shared by every step that takes them
    data = "builtin:digits"
    epochs = 4

    [[steps]]
    id = "small"
    command = "train"
    size = 8

    [[steps]]
    id = "vote"
    command = "ensemble"
    runs = ["${small}", "${big}", "${wide}"]
    prefer = "${small}"

    [report]                        # the one table of report.md: rows of these steps
    steps = ["vote"]

    [smoke]                         # `--smoke`: the tiny version the test suite runs
    epochs = 1

Each command is one entry of `STEPS`. A step that already ran with the same resolved settings
into the same folder is reused, so a recipe stopped half-way continues where it stopped.
Overrides: `--set KEY=VALUE` changes KEY in `[settings]` and in every step that sets it;
`--set ID.KEY=VALUE` changes one step.
"""

from __future__ import annotations

from fastcls.studies.recipes.reading import Recipe, Step, is_recipe, load_recipe, parse_override
from fastcls.studies.recipes.running import RecipeResult, StepRecord, format_value, run_recipe
from fastcls.studies.recipes.steps import STEPS, RecipeError, StepKind, StepOutput, register

__all__ = [
    "STEPS",
    "Recipe",
    "RecipeError",
    "RecipeResult",
    "Step",
    "StepKind",
    "StepOutput",
    "StepRecord",
    "format_value",
    "is_recipe",
    "load_recipe",
    "parse_override",
    "register",
    "run_recipe",
]
