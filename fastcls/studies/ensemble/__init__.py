"""Ensembles of trained runs: vote their predictions on a split, and use the vote as one classifier.

Why: three different models voting often beat the best of them (the 10-class study gained 1.2
points with MobileNet 64 px, MobileNet 224 px and ResNet50 224 px). Members may differ in input size
and normalisation: each is fed with the preprocessing in its own `model.json`. Their class lists are
aligned by name. A member's probabilities on a split are computed once and cached, keyed by the
bytes of its weights, its preprocessing and the files of the split, so trying several vote methods
runs no model twice, and retrained weights or changed images are never served stale.

    result = fastcls.Ensemble(["runs/a", "runs/b", "runs/c"]).vote("builtin:digits", method="soft")
    result.ensemble.accuracy, [m.accuracy for m in result.members]

The vote itself is a pure function over arrays (`combine`), and each method is one entry of
`VOTE_METHODS`.
"""

from __future__ import annotations

from fastcls.studies.ensemble.members import default_cache_dir, default_ensemble_name
from fastcls.studies.ensemble.results import MemberScore, Scores, VoteResult
from fastcls.studies.ensemble.study import Ensemble, EnsembleClassifier, load_ensemble
from fastcls.studies.ensemble.votes import (
    ENSEMBLE_FORMAT,
    VOTE_METHODS,
    VoteMethod,
    combine,
    fit_weights,
    get_method,
    parse_weights,
)

__all__ = [
    "ENSEMBLE_FORMAT",
    "VOTE_METHODS",
    "Ensemble",
    "EnsembleClassifier",
    "MemberScore",
    "Scores",
    "VoteMethod",
    "VoteResult",
    "combine",
    "default_cache_dir",
    "default_ensemble_name",
    "fit_weights",
    "get_method",
    "load_ensemble",
    "parse_weights",
]
