"""Scoring a trained model on one split: accuracy, top-5, loss, per-class scores, confusion counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fastcls.data.sources import Sample
from fastcls.reporting import Reporter


@dataclass
class Evaluation:
    """Scores of a model on one split: overall, per class (scikit-learn), and the confusion counts."""

    data: str
    split: str
    n: int
    accuracy: float
    top5: float
    loss: float
    classes: list[str]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def confusion_counts(truth, predicted, n_classes: int):
    """Counts[true, predicted]; the same as sklearn's confusion_matrix without importing it (1 s)."""
    import numpy as np

    flat = np.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def evaluate_samples(
    model,
    preprocessing,
    classes: list[str],
    samples: list[Sample],
    *,
    data: str,
    split: str,
    on_bad_image: str,
    reporter: Reporter,
) -> Evaluation:
    """Score `model` on `samples` (one split of `data`). Per-class scores follow scikit-learn's
    definitions (zero_division=0); the tests check them."""
    import numpy as np
    import torch

    from fastcls.data.loaders import label_index
    from fastcls.scoring import score_files

    index = label_index(samples, classes)
    scores = score_files(
        model,
        preprocessing,
        [s.path for s in samples],
        torch.tensor([index[s.label] for s in samples], dtype=torch.long),
        on_bad_image=on_bad_image,
        reporter=reporter,
        description=split,
    )
    probs, labels = scores.probs, scores.labels
    top = probs.topk(min(5, len(classes)), dim=-1).indices
    predicted = top[:, 0]
    loss = float(torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels))
    confusion = confusion_counts(labels.numpy(), predicted.numpy(), len(classes))
    support = confusion.sum(axis=1)
    hits = np.diag(confusion)
    precision = np.divide(hits, confusion.sum(axis=0), out=np.zeros(len(hits)), where=confusion.sum(axis=0) > 0)
    recall = np.divide(hits, support, out=np.zeros(len(hits)), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(hits)), where=precision + recall > 0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }
    return Evaluation(
        data=data,
        split=split,
        n=len(labels),
        accuracy=float((predicted == labels).float().mean()),
        top5=float((top == labels.view(-1, 1)).any(dim=1).float().mean()),
        loss=loss,
        classes=list(classes),
        per_class=per_class,
        confusion=confusion.tolist(),
        skipped=len(scores.skipped),
    )
