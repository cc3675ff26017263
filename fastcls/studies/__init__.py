"""Studies: many runs or many models at once, each above the API that trains and loads one.

`sweep` (Optuna searches), `scaling` (accuracy against data size), `sensitivity` (which layers
matter), `ensemble` (votes of several runs) and `recipes` (TOML files of steps that reproduce a
whole study). Import what you need from its module, e.g. `from fastcls.studies.sweep import sweep`.
"""
