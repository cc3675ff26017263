"""How an ensemble votes: the vote methods, pure functions over (members, images, classes)
probabilities, and the members' weights (given, or fitted on validation labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastcls.errors import ConfigError
from fastcls.registry import Registry

if TYPE_CHECKING:
    import numpy as np


__all__ = [
    "ENSEMBLE_FORMAT",
    "EPS",
    "VOTE_METHODS",
    "VoteMethod",
    "combine",
    "fit_weights",
    "get_method",
    "parse_weights",
]


ENSEMBLE_FORMAT = "fastcls.ensemble/1"


_TIE_DECIMALS = 9  # scores equal to this many decimals are a tie, settled by the preferred member


EPS = 1e-12  # probability floor for logarithms, as in ImageClassifier.evaluate


# -- vote methods: pure functions over (members, images, classes) probabilities -------------------
@dataclass(frozen=True)
class VoteMethod:
    """One way to vote: `combine(probs, weights)` maps (members, N, classes) to (N, classes) scores."""

    name: str
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray]
    probabilistic: bool  # scores are class probabilities, so the log-loss is defined
    weighted: bool  # takes per-member weights (--weights)
    help: str


def _hard(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each member's top class gets one vote; the score is the share of votes."""
    import numpy as np

    members, n, classes = probs.shape
    counts = np.zeros((n, classes))
    rows = np.arange(n)
    for top in probs.argmax(-1):
        counts[rows, top] += 1
    return counts / members


def _soft(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return probs.mean(0)


def _weighted(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.tensordot(weights / weights.sum(), probs, axes=1)


def _geometric(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean of log-probabilities, renormalised: one confident 'no' from any member vetoes a class."""
    import numpy as np

    logs = np.log(np.clip(probs, EPS, None)).mean(0)
    logs -= logs.max(-1, keepdims=True)
    unnormalised = np.exp(logs)
    return unnormalised / unnormalised.sum(-1, keepdims=True)


VOTE_METHODS: Registry[VoteMethod] = Registry("vote method", {
    method.name: method
    for method in (
        VoteMethod("hard", _hard, False, False, "majority of the members' top classes (ties go to --prefer)"),
        VoteMethod("soft", _soft, True, False, "mean of the members' probabilities"),
        VoteMethod("weighted", _weighted, True, True, "weighted mean of probabilities (--weights 1,1,2 or auto)"),
        VoteMethod("geometric", _geometric, True, False, "mean of log-probabilities, renormalised"),
    )
})  # fmt: skip


def get_method(name: str) -> VoteMethod:
    return VOTE_METHODS.lookup(name)


def combine(
    probs: Any, method: str = "hard", weights: Sequence[float] | None = None, prefer: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Vote members' probabilities: (scores (N, classes), classes ranked best first per image).

    `probs` is (members, N, classes) with the same class order for every member. Scores equal to
    9 decimals tie; a tie goes to the class the `prefer` member finds more probable, then to the
    lower class index. For `hard` the scores are vote shares; otherwise probabilities.

    >>> scores, ranked = combine([[[0.6, 0.4]], [[0.3, 0.7]]], "hard", prefer=1)
    >>> ranked[:, 0].tolist(), scores.tolist()
    ([1], [[0.5, 0.5]])
    """
    import numpy as np

    spec = get_method(method)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (members, images, classes), got shape {probs.shape}")
    members = probs.shape[0]
    if not 0 <= prefer < members:
        raise ValueError(f"prefer={prefer} is not a member index below {members}")
    if weights is not None and not spec.weighted:
        raise ConfigError(
            f"weights are for --method weighted; {method} counts every member the same. "
            "Use --method weighted, or leave out --weights."
        )
    w = np.full(members, 1.0 / members) if weights is None else _normalised(weights, members)
    scores = spec.combine(probs, w)
    ranked = np.lexsort((-probs[prefer], -np.round(scores, _TIE_DECIMALS)), axis=-1)
    return scores, ranked


def _normalised(weights: Sequence[float], members: int) -> np.ndarray:
    import numpy as np

    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (members,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(
            f"weights {list(map(float, np.atleast_1d(w)))} must be {members} non-negative numbers, one per member, "
            "not all zero (e.g. --weights " + ",".join(["1"] * members) + ")."
        )
    return w / w.sum()


def parse_weights(text: str | Sequence[float] | None, members: int) -> list[float] | str | None:
    """`--weights`: None, `auto`, `1,1,2` or a sequence of numbers -> None, 'auto' or normalised floats."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return None if text is None else "auto"
    if isinstance(text, str):
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            raise ConfigError(
                f"--weights {text!r} is not a comma-separated list of numbers; write e.g. "
                + ",".join(["1"] * members)
                + " (one per member) or auto."
            ) from None
    else:
        values = [float(v) for v in text]
    if len(values) != members:
        raise ConfigError(f"--weights {text!r} gives {len(values)} weight(s) for {members} members; give one each.")
    return [float(v) for v in _normalised(values, members)]


def fit_weights(probs: Any, labels: Any, iterations: int = 2000) -> np.ndarray:
    """Member weights that minimise the log-loss of the weighted mean of probabilities on (probs, labels).

    Why EM: the log-loss of a mixture is convex in its weights, and the EM update for mixture
    proportions never raises it, so starting from equal weights the result is at least as good as
    soft voting on the data it was fitted on (fit on valid, never on test).

    >>> fit_weights([[[0.9, 0.1]], [[0.5, 0.5]]], [0]).round(3).tolist()
    [1.0, 0.0]
    """
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    members, n = probs.shape[:2]
    truth = np.clip(probs[:, np.arange(n), labels], EPS, None)  # (members, N): each one's p(true class)
    w = np.full(members, 1.0 / members)
    for _ in range(iterations):
        new = w * (truth / (w @ truth)).mean(1)
        new /= new.sum()
        done = np.abs(new - w).max() < 1e-10
        w = new
        if done:
            break
    return w
