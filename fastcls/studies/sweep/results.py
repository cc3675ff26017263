"""What a sweep reports: one row per trial, the best settings, parameter importance, and the
files and plots written into the sweep folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.runs import atomic_write_text

if TYPE_CHECKING:
    import optuna

from fastcls.studies.sweep.space import METRICS, MIN_IMPORTANCE_TRIALS, Metric, Param

__all__ = [
    "SweepResult",
    "TrialRow",
    "fmt",
    "importance",
    "sweep_outputs",
]


# -- results ------------------------------------------------------------------------------------
@dataclass
class TrialRow:
    """One trial as the sweep reports it: its state, score, settings and run folder."""

    number: int
    state: str  # complete, pruned, fail, running
    value: float | None
    params: dict[str, Any]
    run: str | None
    epochs: int | None = None
    seconds: float | None = None
    note: str = ""
    worker: str = ""  # host:pid of the process that ran it
    intermediate: dict[int, float] = field(default_factory=dict)


@dataclass
class SweepResult:
    """What a sweep holds after this call: every trial of the study (from any process), the best."""

    study: str
    storage: str
    out: Path
    metric: str
    direction: str
    sampler: str
    pruner: str
    params: list[Param]
    trials: list[TrialRow]
    ran: int  # trials this call ran
    best: TrialRow | None
    best_config: Path | None
    importance: dict[str, float] | None
    importance_note: str
    files: dict[str, Path] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts

    def ranked(self) -> list[TrialRow]:
        """Complete trials, best first."""
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return sorted(done, key=lambda t: t.value, reverse=self.direction == "maximize")

    def to_dict(self) -> dict[str, Any]:
        def row(t: TrialRow | None) -> dict[str, Any] | None:
            if t is None:
                return None
            return {k: v for k, v in vars(t).items() if k != "intermediate"}

        return {
            "study": self.study,
            "storage": self.storage,
            "out": str(self.out),
            "metric": self.metric,
            "direction": self.direction,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "space": {p.name: p.to_dict() for p in self.params},
            "ran": self.ran,
            "counts": self.counts(),
            "best": row(self.best),
            "best_config": str(self.best_config) if self.best_config else None,
            "importance": self.importance,
            "importance_note": self.importance_note,
            "trials": [row(t) for t in self.trials],
            "files": {k: str(v) for k, v in self.files.items()},
        }


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# -- outputs ------------------------------------------------------------------------------------
def _note(trial: optuna.trial.FrozenTrial, retried_as: dict[int, int]) -> str:
    """What trials.csv says about a trial: its error or pruning, a dead worker, and retries."""
    attrs = trial.user_attrs
    note = attrs.get("error") or attrs.get("note") or ""
    if trial.state.name == "FAIL" and not note and "seconds" not in attrs:
        note = "its worker stopped mid-trial (no heartbeat)"  # killed: it never got to record its time
    history = trial.system_attrs.get("retry_history", [])
    parts = [note] if note else []
    if history:
        parts.append(f"retry of trial {history[-1]}")
    if trial.number in retried_as:
        parts.append(f"retried as trial {retried_as[trial.number]}")
    return "; ".join(parts)


def _rows(study: optuna.Study) -> list[TrialRow]:
    rows = []
    trials = study.trials
    retried_as = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    for t in trials:
        state = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "fail"}.get(t.state.name, t.state.name.lower())
        attrs = t.user_attrs
        rows.append(
            TrialRow(
                number=t.number,
                state=state,
                value=t.value if state == "complete" else None,
                params=dict(t.params),
                run=attrs.get("run"),
                epochs=attrs.get("epochs"),
                seconds=attrs.get("seconds"),
                note=_note(t, retried_as),
                worker=attrs.get("worker", ""),
                intermediate={int(k): float(v) for k, v in t.intermediate_values.items()},
            )
        )
    return rows


def importance(study: optuna.Study, params: Sequence[str]) -> tuple[dict[str, float] | None, str]:
    """fANOVA importance of each swept setting (shares summing to 1), or None and the reason.

    Fewer than `MIN_IMPORTANCE_TRIALS` complete trials give no importance: fANOVA would rank
    noise. A setting that took one value in every trial has importance 0.
    """
    import optuna

    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"importance needs at least {MIN_IMPORTANCE_TRIALS} complete trials; this study has {len(complete)}. "
            "Run more trials (the same command continues the study)."
        )
    varied = [p for p in params if len({repr(t.params.get(p)) for t in complete}) > 1]
    if not varied:
        return None, "every complete trial used the same settings, so no setting explains the score."
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied)
    except (RuntimeError, ValueError) as exc:
        return None, f"fANOVA could not rank the settings: {exc}"
    shares = {name: float(found.get(name, 0.0)) for name in params}
    return dict(sorted(shares.items(), key=lambda kv: -kv[1])), f"fANOVA over {len(complete)} complete trials"


def _trials_csv(rows: list[TrialRow], params: list[Param], metric: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [p.name for p in params]
    writer.writerow(["number", "state", metric, *names, "epochs", "seconds", "run", "worker", "note"])
    for row in rows:
        value = "" if row.value is None else f"{row.value:.6g}"
        cells = [row.params.get(n, "") for n in names]
        extra = [row.epochs or "", row.seconds or "", row.run or "", row.worker, row.note]
        writer.writerow([row.number, row.state, value, *cells, *extra])
    return buffer.getvalue()


def _best_config(best: TrialRow, study: str, out: Path) -> Path | None:
    """best.toml: the best trial's resolved config.toml, set to train into runs/<study>-best."""
    from fastcls.config import load_config

    if not best.run or not (Path(best.run) / "config.toml").is_file():
        return None
    config = load_config(Path(best.run) / "config.toml")
    config = config.merged({"run": {"name": f"{study}-best", "root": "runs", "out": None, "exist_ok": False}})
    header = (
        f"# best trial {best.number} of study {study!r}; train it with: fastcls run {out / 'best.toml'}\n"
        f"# swept: {', '.join(f'{k} = {v!r}' for k, v in best.params.items())}\n"
    )
    path = out / "best.toml"
    atomic_write_text(path, header + config.to_toml())
    return path


def sweep_outputs(
    study: optuna.Study,
    params: list[Param],
    metric: str,
    out: str | Path,
    *,
    sampler: str = "tpe",
    pruner: str = "median",
    storage: str = "",
) -> SweepResult:
    """Write trials.csv, best.toml, importance.csv and the plots for a study; return its SweepResult."""
    out = Path(out)
    rows = _rows(study)
    goal = METRICS[metric]
    files: dict[str, Path] = {}
    atomic_write_text(out / "trials.csv", _trials_csv(rows, params, metric))
    files["trials"] = out / "trials.csv"
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    best = None
    for row in done:
        if best is None or goal.better(row.value, best.value):
            best = row
    best_config = _best_config(best, study.study_name, out) if best else None
    if best_config:
        files["best"] = best_config
    shares, note = importance(study, [p.name for p in params])
    if shares is not None:
        text = "param,importance\n" + "".join(f"{k},{v:.6f}\n" for k, v in shares.items())
        atomic_write_text(out / "importance.csv", text)
        files["importance"] = out / "importance.csv"
        files["importance_plot"] = _importance_plot(shares, out / "plots" / "importance.png")
    if rows:
        files["trials_plot"] = _trials_plot(rows, metric, goal, out / "plots" / "trials.png")
    if done:
        files["parallel_plot"] = _parallel_plot(done, params, metric, out / "plots" / "parallel.png")
    result = SweepResult(
        study=study.study_name,
        storage=storage,
        out=out,
        metric=metric,
        direction=goal.direction,
        sampler=sampler,
        pruner=pruner,
        params=params,
        trials=rows,
        ran=0,
        best=best,
        best_config=best_config,
        importance=shares,
        importance_note=note,
        files=files,
    )
    atomic_write_text(out / "summary.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    files["summary"] = out / "summary.json"
    return result


# -- plots (matplotlib, drawn from the rows) ------------------------------------------------------
def _trials_plot(rows: list[TrialRow], metric: str, goal: Metric, path: Path) -> Path:
    """The metric of each trial in order, pruned trials at their last report, and the best so far."""
    from fastcls.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    ax.plot([r.number for r in done], [r.value for r in done], "o", color="tab:blue", label="complete")
    pruned = [r for r in rows if r.state == "pruned" and r.intermediate]
    if pruned:
        last = [r.intermediate[max(r.intermediate)] for r in pruned]
        ax.plot([r.number for r in pruned], last, "x", color="tab:gray", label="pruned (last epoch reported)")
    best_x, best_y, best = [], [], None
    for r in sorted(done, key=lambda r: r.number):
        if best is None or goal.better(r.value, best):
            best = r.value
        best_x.append(r.number)
        best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title=f"{metric} per trial")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return save_figure(fig, path)


def _axis_position(param: Param, value: Any) -> float:
    """Where `value` sits on the param's parallel axis, 0 (low / first choice) to 1."""
    if param.type == "choice":
        index = next((i for i, v in enumerate(param.values) if v == value), 0)
        return index / max(len(param.values) - 1, 1)
    low, high, v = float(param.low), float(param.high), float(value)
    if param.log:
        low, high, v = math.log(low), math.log(high), math.log(v)
    return (v - low) / (high - low) if high > low else 0.5


def _parallel_plot(rows: list[TrialRow], params: list[Param], metric: str, path: Path) -> Path:
    """Parallel coordinates: one axis per swept setting plus the metric, one line per trial,
    coloured by the metric (bright is high), so good regions show as bundles of bright lines."""
    from fastcls.plots import pyplot, save_figure

    plt = pyplot()
    values = [r.value for r in rows]
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    fig, ax = plt.subplots(figsize=(1.8 * (len(params) + 1) + 2, 4.5), dpi=100)
    cmap = plt.get_cmap("viridis")
    for row in sorted(rows, key=lambda r: r.value):
        ys = [_axis_position(p, row.params.get(p.name)) for p in params] + [(row.value - lo) / span]
        ax.plot(range(len(ys)), ys, "-o", color=cmap((row.value - lo) / span), alpha=0.8, ms=3, lw=1.3)
    for i, param in enumerate(params):
        ax.axvline(i, color="black", lw=0.8)
        if param.type == "choice":
            for k, v in enumerate(param.values):
                ax.text(i + 0.03, k / max(len(param.values) - 1, 1), str(v), fontsize=8, va="center")
        else:
            ax.text(i + 0.03, 0, fmt(param.low), fontsize=8, va="bottom")
            ax.text(i + 0.03, 1, fmt(param.high), fontsize=8, va="top")
    ax.axvline(len(params), color="black", lw=0.8)
    ax.text(len(params) + 0.03, 0, f"{lo:.3f}", fontsize=8, va="bottom")
    ax.text(len(params) + 0.03, 1, f"{hi:.3f}", fontsize=8, va="top")
    ax.set_xticks(range(len(params) + 1), [p.name + (" (log)" if p.log else "") for p in params] + [metric])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(params) + 0.5)
    ax.set_title(f"{len(rows)} complete trials (colour: {metric})")
    return save_figure(fig, path)


def _importance_plot(shares: dict[str, float], path: Path) -> Path:
    from fastcls.plots import pyplot, save_figure

    plt = pyplot()
    names = list(shares)
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.35 * len(names)), dpi=100)
    ax.barh(range(len(names)), [shares[n] for n in names], color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlabel="fANOVA importance (share of the score's variance)", xlim=(0, 1), title="Parameter importance")
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)
