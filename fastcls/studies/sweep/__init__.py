"""Hyper-parameter sweeps with Optuna: any train/finetune setting can be searched.

Why Optuna: its study lives in a database (SQLite by default, in the sweep folder), so a sweep
can be stopped and resumed, and several processes or machines can work on one study at once by
giving the same `storage` URL (PostgreSQL across machines, or a journal file on NFS). Running
trials send heartbeats, so a worker that dies leaves a failed trial, not one RUNNING forever,
and `retry_failed` runs its settings again. Every trial is a normal run folder
under `<out>/trials/`, so `fastcls evaluate`, `interpret` and `runs ls` work on any of them.

The search space is a TOML table of settings, each one entry of a parameter type (`PARAM_TYPES`):

    [params]
    lr = { type = "float", low = 1e-4, high = 1e-2, log = true }
    blocks = { type = "int", low = 2, high = 4 }
    filters = { type = "choice", values = [16, 32] }

Pruning uses per-epoch reports of the metric: a trial whose epoch-k score is below the median
of earlier trials at epoch k stops there (its run folder keeps the epochs it finished, marked
`stopped: pruned`). Samplers, pruners, parameter types and metrics are registries.

    result = sweep("builtin:digits", {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
                   trials=4, out="runs/sweeps/lr", settings={"arch": "cnn", "epochs": 2})
    result.best.params, result.importance
"""

from __future__ import annotations

from fastcls.config import settings_differences
from fastcls.studies.sweep.results import SweepResult, TrialRow, importance, sweep_outputs
from fastcls.studies.sweep.space import (
    METRICS,
    MIN_IMPORTANCE_TRIALS,
    PARAM_TYPES,
    PRUNERS,
    SAMPLERS,
    Metric,
    Param,
    ParamType,
    SweepError,
    TrialFailed,
    load_space,
    parse_space,
)
from fastcls.studies.sweep.storage import (
    HEARTBEAT,
    HEARTBEAT_ATTR,
    POSTGRES_HINT,
    default_storage,
    open_storage,
    shown_storage,
)
from fastcls.studies.sweep.study import sweep

__all__ = [
    "HEARTBEAT",
    "HEARTBEAT_ATTR",
    "METRICS",
    "MIN_IMPORTANCE_TRIALS",
    "PARAM_TYPES",
    "POSTGRES_HINT",
    "PRUNERS",
    "SAMPLERS",
    "Metric",
    "Param",
    "ParamType",
    "SweepError",
    "SweepResult",
    "TrialFailed",
    "TrialRow",
    "default_storage",
    "importance",
    "load_space",
    "open_storage",
    "parse_space",
    "settings_differences",
    "shown_storage",
    "sweep",
    "sweep_outputs",
]
