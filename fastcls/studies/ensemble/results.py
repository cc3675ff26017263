"""What a vote measured: the ensemble's and each member's scores on a split, and the files
`Ensemble.vote` writes (predictions.csv, ensemble.json).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.errors import ConfigError
from fastcls.runs import atomic_write_text

if TYPE_CHECKING:
    import numpy as np

from fastcls.studies.ensemble.votes import ENSEMBLE_FORMAT, EPS

__all__ = [
    "MemberScore",
    "Scores",
    "VoteResult",
    "rank_classes",
    "score_ranked",
]


# -- scores -----------------------------------------------------------------------------------
@dataclass
class Scores:
    """Accuracy, top-5 and log-loss (None for hard votes: vote shares are not probabilities)."""

    accuracy: float
    top5: float
    log_loss: float | None


@dataclass
class MemberScore:
    run: str
    name: str
    size: int
    accuracy: float
    top5: float
    log_loss: float | None
    weight: float
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def score_ranked(ranked: np.ndarray, labels: np.ndarray, probs: np.ndarray | None) -> Scores:
    import numpy as np

    k = min(5, ranked.shape[1])
    loss = None
    if probs is not None:
        loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, None)).mean())
    return Scores(
        accuracy=float((ranked[:, 0] == labels).mean()),
        top5=float((ranked[:, :k] == labels[:, None]).any(1).mean()),
        log_loss=loss,
    )


def rank_classes(probs: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.argsort(-probs, axis=-1, kind="stable")


@dataclass
class VoteResult:
    """What `Ensemble.vote` measured; `save(folder)` writes predictions.csv and ensemble.json."""

    data: str
    split: str
    n: int
    skipped: int
    method: str
    tta: bool
    classes: list[str]
    members: list[MemberScore]
    ensemble: Scores
    agreement: list[list[float]]  # [i][j]: share of images on which members i and j pick the same class
    oracle: float  # share of images that at least one member gets right: the ceiling of a hard vote
    weights: list[float]
    weights_source: str
    prefer: str
    prefer_name: str
    prefer_source: str
    notes: list[str] = field(default_factory=list)
    out: Path | None = None
    paths: list[str] = field(default_factory=list, repr=False)
    labels: Any = field(default=None, repr=False)
    member_probs: Any = field(default=None, repr=False)  # (members, N, classes), the ensemble's class order
    scores: Any = field(default=None, repr=False)  # (N, classes): vote shares (hard) or probabilities
    ranked: Any = field(default=None, repr=False)  # (N, classes): class indices, best first

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": [m.to_dict() for m in self.members],
            "ensemble": vars(self.ensemble).copy(),
            "method": self.method,
            "data": self.data,
            "split": self.split,
            "n": self.n,
            "skipped": self.skipped,
            "tta": self.tta,
            "classes": self.classes,
            "prefer": self.prefer,
            "prefer_source": self.prefer_source,
            "weights": self.weights,
            "weights_source": self.weights_source,
            "agreement": self.agreement,
            "oracle": self.oracle,
            "notes": self.notes,
            "out": str(self.out) if self.out is not None else None,
        }

    def predictions_csv(self) -> str:
        """path, each member's prediction and probability, the ensemble's prediction and score, true label."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = ["path"]
        for member in self.members:
            header += [member.name, f"{member.name}_probability"]
        writer.writerow([*header, "ensemble", "ensemble_score", "true_label"])
        tops = self.member_probs.argmax(-1)
        for row, path in enumerate(self.paths):
            cells = [path]
            for i in range(len(self.members)):
                top = int(tops[i, row])
                cells += [self.classes[top], f"{self.member_probs[i, row, top]:.6f}"]
            winner = int(self.ranked[row, 0])
            cells += [self.classes[winner], f"{self.scores[row, winner]:.6f}", self.classes[int(self.labels[row])]]
            writer.writerow(cells)
        return buffer.getvalue()

    def save(self, folder: str | Path) -> Path:
        """Write predictions.csv, then ensemble.json (each atomically); `fastcls predict` reads the json."""
        from fastcls.version import __version__

        folder = Path(folder).expanduser()
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--out {str(folder)!r} is a file; give a folder for predictions.csv and ensemble.json.")
        self.out = folder
        atomic_write_text(folder / "predictions.csv", self.predictions_csv())
        card = {
            "format": ENSEMBLE_FORMAT,
            "members": [m.run for m in self.members],
            "method": self.method,
            "prefer": self.prefer,
            "prefer_source": self.prefer_source,
            "weights": self.weights,
            "weights_source": self.weights_source,
            "tta": self.tta,
            "classes": self.classes,
            "data": self.data,
            "split": self.split,
            "scores": {
                "n": self.n,
                "members": [m.to_dict() for m in self.members],
                "ensemble": vars(self.ensemble).copy(),
                "agreement": self.agreement,
                "oracle": self.oracle,
            },
            "fastcls": __version__,
            "created": datetime.now().isoformat(timespec="seconds"),
        }
        atomic_write_text(folder / "ensemble.json", json.dumps(card, indent=2) + "\n")
        return folder
