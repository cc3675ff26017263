"""The sensitivity file (`fastcls sensitivity` writes it): its name and columns, and reading `FILE:K`
into tensor names for `--freeze-sensitive` / `--boost-sensitive`. Here, in the training layer, because
fine-tuning reads it; the study that writes it (fastcls.studies.sensitivity) sits above the API."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from fastcls.config import flag
from fastcls.errors import ConfigError, RunError, did_you_mean

__all__ = ["CSV_COLUMNS", "CSV_NAME", "check_sensitive_names", "read_sensitive"]

CSV_NAME = "sensitivity.csv"
# The six columns the issue names, then what the file ranks (read_sensitive refuses module/group files).
CSV_COLUMNS = ("rank", "name", "shape", "numel", "score", "norm_score", "method", "per")


def read_sensitive(spec: str) -> list[str]:
    """The top-K tensor names of a sensitivity file, from `FILE:K` (FILE: a CSV or a run folder).

    What `fastcls finetune --freeze-sensitive FILE:K` and `--boost-sensitive FILE:K` take. The file
    must rank tensors (`--per tensor`, the default): the optimiser needs parameter names.

    >>> read_sensitive("runs/digits-cnn:2")  # doctest: +SKIP
    ['head.out.weight', 'head.fc.weight']
    """
    example = f"e.g. runs/x/{CSV_NAME}:2 or runs/x:2"
    text, colon, k_text = str(spec).rpartition(":")
    if not colon or not text:
        raise ConfigError(
            f"{spec!r} is not FILE:K; give a sensitivity file (or its run folder) and a count, {example}."
        )
    try:
        k = int(k_text)
    except ValueError:
        k = 0
    if k < 1:
        raise ConfigError(f"in {spec!r}, K must be a whole number of at least 1, not {k_text!r}; {example}.")
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / CSV_NAME
        if not path.is_file():
            raise RunError(
                f"{path.parent} has no {CSV_NAME}; run `fastcls sensitivity {path.parent}` first, or give the CSV."
            )
    elif not path.is_file():
        raise RunError(f"sensitivity file {str(path)!r} does not exist; run `fastcls sensitivity RUN` to make one.")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    if not {"rank", "name"} <= columns:
        raise ConfigError(
            f"{path} is not a sensitivity file (it needs columns {', '.join(CSV_COLUMNS[:6])}); "
            "make one with `fastcls sensitivity RUN`."
        )
    pers = {row.get("per") or "tensor" for row in rows}
    if pers != {"tensor"}:
        found = ", ".join(sorted(pers - {"tensor"}))
        raise ConfigError(
            f"{path} ranks {found}s, but freezing or boosting needs parameter tensor names; "
            f"rerun `fastcls sensitivity RUN --per tensor`."
        )
    if k > len(rows):
        raise ConfigError(
            f"{spec!r} asks for the top {k} tensors but {path} ranks only {len(rows)}; use K <= {len(rows)}."
        )
    try:
        rows.sort(key=lambda row: int(row["rank"]))
    except (TypeError, ValueError):
        raise ConfigError(
            f"{path} has a rank that is not a whole number; rewrite it with `fastcls sensitivity`."
        ) from None
    return [row["name"] for row in rows[:k]]


def check_sensitive_names(names: Sequence[str], available: Iterable[str], source: str = "the sensitivity file") -> None:
    """Raise a ConfigError naming the tensors of `names` that the model does not have.

    For the finetune side: a file made for another architecture would otherwise fail deep inside.
    """
    available = list(available)
    known = set(available)
    missing = [name for name in names if name not in known]
    if missing:
        raise ConfigError(
            f"{source} names tensors this model does not have: {', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}; was it made for another {flag('arch')}? Rerun `fastcls sensitivity` "
            f"on a run of this architecture.{did_you_mean(missing[0], available)}"
        )
