"""How good is a backbone's representation: k-NN or a linear probe on labelled train -> valid features.

k-NN is lightly's `knn_predict` (cosine similarity, temperature-weighted votes of the k nearest
training images; the monitor of the MoCo/InstDisc papers). The linear probe is scikit-learn's
logistic regression on standardised features. Both are deterministic for given weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from fastcls.data.images import Preprocessing
from fastcls.data.loaders import Batches, DecodedSplit
from fastcls.errors import ConfigError, did_you_mean

__all__ = ["PROBES", "ProbeResult", "features", "run_probe"]

PROBES = ("knn", "linear", "none")


@dataclass
class ProbeResult:
    kind: str
    accuracy: float
    train: int
    valid: int
    k: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_probe(name: str) -> None:
    if name not in PROBES:
        raise ConfigError(f"probe {name!r} is not one of {', '.join(PROBES)}.{did_you_mean(name, PROBES)}")


@torch.no_grad()
def features(backbone: nn.Module, split: DecodedSplit, prep: Preprocessing, device: torch.device) -> torch.Tensor:
    """The backbone's feature vectors (eval mode) of every image of `split`, on the CPU."""
    was_training = backbone.training
    backbone.eval()
    try:
        return torch.cat([backbone(x).float().cpu() for x, _ in Batches(split, prep, 256, device=device)])
    finally:
        backbone.train(was_training)


def run_probe(
    kind: str,
    backbone: nn.Module,
    train: DecodedSplit,
    valid: DecodedSplit,
    n_classes: int,
    prep: Preprocessing,
    device: torch.device,
    k: int = 200,
) -> ProbeResult:
    """Accuracy on `valid` of a k-NN (`kind="knn"`) or logistic-regression (`"linear"`) probe fitted on `train`."""
    check_probe(kind)
    train_x, valid_x = features(backbone, train, prep, device), features(backbone, valid, prep, device)
    if kind == "knn":
        from lightly.utils.benchmarking import knn_predict

        k = min(k, len(train_x))
        bank = nn.functional.normalize(train_x, dim=1)
        query = nn.functional.normalize(valid_x, dim=1)
        predicted = knn_predict(query, bank.T, train.labels, n_classes, knn_k=k, knn_t=0.1)[:, 0]
        accuracy = float((predicted == valid.labels).float().mean())
        return ProbeResult("knn", accuracy, len(train_x), len(valid_x), k)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x.numpy(), train.labels.numpy())
    accuracy = float((probe.predict(valid_x.numpy()) == valid.labels.numpy()).mean())
    return ProbeResult("linear", accuracy, len(train_x), len(valid_x))
