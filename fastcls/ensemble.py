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

import contextlib
import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.errors import ConfigError, DataError, FastclsError, RunError, did_you_mean
from fastcls.model_card import ModelCard
from fastcls.predictions import Prediction, expand_images
from fastcls.registry import Registry
from fastcls.runs import atomic_write_bytes, atomic_write_text, require_run

if TYPE_CHECKING:
    import numpy as np

    from fastcls.api import ImageClassifier
    from fastcls.data.sources import ImageSource
    from fastcls.reporting import Reporter

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

ENSEMBLE_FORMAT = "fastcls.ensemble/1"
_CACHE_FORMAT = "fastcls.predictions/1"
_TIE_DECIMALS = 9  # scores equal to this many decimals are a tie, settled by the preferred member
_EPS = 1e-12  # probability floor for logarithms, as in ImageClassifier.evaluate


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

    logs = np.log(np.clip(probs, _EPS, None)).mean(0)
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
    truth = np.clip(probs[:, np.arange(n), labels], _EPS, None)  # (members, N): each one's p(true class)
    w = np.full(members, 1.0 / members)
    for _ in range(iterations):
        new = w * (truth / (w @ truth)).mean(1)
        new /= new.sum()
        done = np.abs(new - w).max() < 1e-10
        w = new
        if done:
            break
    return w


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


def _scores(ranked: np.ndarray, labels: np.ndarray, probs: np.ndarray | None) -> Scores:
    import numpy as np

    k = min(5, ranked.shape[1])
    loss = None
    if probs is not None:
        loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, None)).mean())
    return Scores(
        accuracy=float((ranked[:, 0] == labels).mean()),
        top5=float((ranked[:, :k] == labels[:, None]).any(1).mean()),
        log_loss=loss,
    )


def _ranked(probs: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.argsort(-probs, axis=-1, kind="stable")


# -- members ----------------------------------------------------------------------------------
class _Member:
    """A run folder used as a member: its model card at once, its model only when it must run."""

    def __init__(self, path: str | Path) -> None:
        self.path = require_run(path).resolve()
        self.card = ModelCard.read(self.path)
        self.card.require_classifier(self.path)
        self.classes = self.card.classes
        try:
            self.size = int(self.card.preprocessing["size"])
        except (TypeError, ValueError) as exc:
            raise RunError(f"{self.path}/model.json is damaged or from another tool ({exc}).") from None
        self.name = self.path.name
        self._clf: ImageClassifier | None = None
        self._sha256: str | None = None

    def classifier(self) -> ImageClassifier:
        if self._clf is None:
            from fastcls.api import load

            self._clf = load(self.path)
        return self._clf

    def weights_sha256(self) -> str:
        if self._sha256 is None:
            digest = hashlib.sha256()
            with (self.path / "model.safetensors").open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def carve_settings(self) -> tuple[float, int]:
        """(valid_pct, seed) the run was trained with: how it carved valid out of class folders."""
        from fastcls.config import Config, load_config

        try:
            config = load_config(self.path / "config.toml")
        except FastclsError:
            config = Config()  # no usable config.toml: the defaults it was trained with
        return config.data.valid_pct, config.train.seed


def _run_member(clf: ImageClassifier, paths: Sequence[Path], tta: bool, reporter: Reporter | None, label: str):
    """(probabilities (N, member classes), kept (N,) bool) for files, in the member's own preprocessing.

    Scored batch by batch (`fastcls.scoring`), so any number of files fits in memory. TTA: the mean
    of the image and its horizontal flip (the API has no TTA yet). Unreadable files get a zero row
    and kept=False.
    """
    import numpy as np

    from fastcls.errors import DataError
    from fastcls.scoring import score_files

    out = np.zeros((len(paths), len(clf.classes)), dtype=np.float32)
    kept = np.zeros(len(paths), dtype=bool)
    try:
        scores = score_files(clf.model, clf.preprocessing, list(paths), tta=tta, reporter=reporter, description=label)
    except DataError:  # none readable: every row stays empty, as before
        return out, kept
    chosen = scores.rows(list(paths))
    out[chosen] = scores.probs.numpy()
    kept[chosen] = True
    return out, kept


def _cache_key(member: _Member, paths: Sequence[Path], tta: bool) -> str:
    """Weights' bytes, what feeds them (preprocessing, classes, arch) and each file's identity."""
    files = []
    for path in paths:
        try:
            stat = path.stat()
            files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
        except OSError:
            files.append([str(path), -1, -1])
    card = member.card
    spec = {
        "format": _CACHE_FORMAT,
        "weights": member.weights_sha256(),
        "arch": card.get("arch"),
        "model_settings": card.get("model_settings"),
        "preprocessing": card.get("preprocessing"),
        "classes": member.classes,
        "tta": tta,
        "files": files,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _read_cache(file: Path, n: int, classes: int):
    import zipfile

    import numpy as np

    try:
        with np.load(file, allow_pickle=False) as stored:
            probs, kept = stored["probs"], stored["kept"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if probs.shape != (n, classes) or kept.shape != (n,):
        return None
    return probs, kept


def _write_cache(file: Path, probs: np.ndarray, kept: np.ndarray) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, probs=probs, kept=kept)
    with contextlib.suppress(OSError):  # a read-only cache only costs time
        atomic_write_bytes(file, buffer.getvalue())


def default_cache_dir() -> Path:
    """`$FASTCLS_HOME/cache/predictions`: shared by every copy of a run, and never inside a run folder."""
    from fastcls.data.builtin import fastcls_home

    return fastcls_home() / "cache" / "predictions"


def _check_classes(members: list[_Member]) -> list[str]:
    """The first member's class order; every member must have the same class names."""
    classes = members[0].classes
    reference = set(classes)
    problems = []
    for member in members[1:]:
        missing, extra = sorted(reference - set(member.classes)), sorted(set(member.classes) - reference)
        if missing:
            problems.append(f"{member.path} lacks {', '.join(missing)}")
        if extra:
            problems.append(f"{member.path} has {', '.join(extra)} that {members[0].path} lacks")
    if problems:
        raise DataError(
            f"ensemble members must share their classes (order may differ): {'; '.join(problems)}. "
            f"{members[0].path} has {', '.join(classes)}; vote only runs trained on the same classes."
        )
    return list(classes)


def _display_names(members: list[_Member]) -> list[str]:
    names = [m.name for m in members]
    if len(set(names)) == len(names):
        return names
    return [f"{i + 1}:{name}" for i, name in enumerate(names)]


def default_ensemble_name() -> str:
    return f"ensemble-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


@dataclass
class _SplitPredictions:
    paths: list[Path]
    labels: np.ndarray  # (N,) indices into the ensemble's classes
    probs: np.ndarray  # (members, N, classes), ensemble class order
    cached: list[bool]
    skipped: int


# -- the ensemble -----------------------------------------------------------------------------
class Ensemble:
    """Trained runs that vote: `Ensemble(["runs/a", "runs/b"]).vote("builtin:digits", method="soft")`.

    Members must share their class names (any order). Predictions are cached under `cache_dir`
    (default `$FASTCLS_HOME/cache/predictions`).
    """

    def __init__(self, runs: Sequence[str | Path], cache_dir: str | Path | None = None) -> None:
        if isinstance(runs, str | Path) or len(runs) < 2:
            given = [str(runs)] if isinstance(runs, str | Path) else [str(r) for r in runs]
            raise ConfigError(
                f"an ensemble needs at least two run folders; got {len(given)} ({', '.join(given) or 'none'}). "
                "Give two or more runs trained on the same classes."
            )
        self.members = [_Member(run) for run in runs]
        seen: dict[Path, int] = {}
        for i, member in enumerate(self.members):
            if member.path in seen:
                raise ConfigError(
                    f"run {member.path} is given twice (members {seen[member.path] + 1} and {i + 1}); "
                    "give each run once, and use --method weighted --weights to count one more."
                )
            seen[member.path] = i
        self.classes = _check_classes(self.members)
        self.names = _display_names(self.members)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    @property
    def runs(self) -> list[Path]:
        return [m.path for m in self.members]

    def member_index(self, run: str | Path) -> int:
        """Which member `run` is: a path to one of the run folders, or a member's folder name."""
        text = str(run)
        candidate = Path(text).expanduser()
        if candidate.exists():
            resolved = candidate.resolve()
            if resolved.is_file():
                resolved = resolved.parent
            for i, member in enumerate(self.members):
                if member.path == resolved:
                    return i
        pairs = enumerate(zip(self.members, self.names, strict=True))
        matches = [i for i, (member, name) in pairs if text in (member.name, name)]
        if len(matches) == 1:
            return matches[0]
        raise ConfigError(
            f"--prefer {text!r} is not one of the members ({', '.join(map(str, self.runs))}); "
            f"give one of those run folders.{did_you_mean(text, self.names)}"
        )

    def _source(self, data: str | Path) -> tuple[ImageSource, list[str]]:
        from fastcls.data.sources import resolve_source

        settings = [m.carve_settings() for m in self.members]
        source = resolve_source(str(data), *settings[0])
        notes = []
        if source.split_by == "valid_pct" and len(set(settings)) > 1:
            notes.append(
                f"{source.spec} has no valid folder and the members carved valid with different "
                f"(valid_pct, seed) {sorted(set(settings))}; the split follows {self.members[0].name}'s, so "
                "other members may have trained on some of its images."
            )
        unknown = sorted(set(source.classes) - set(self.classes))
        if unknown:
            raise DataError(
                f"{source.spec} has classes the members never saw: {', '.join(unknown)}; they know "
                f"{', '.join(self.classes)}."
            )
        return source, notes

    def _predict_split(self, source: ImageSource, split: str, tta: bool, reporter: Reporter) -> _SplitPredictions:
        import numpy as np

        if split not in source.splits:
            raise DataError(
                f"{source.spec} has no {split!r} split; it has {', '.join(source.splits)}; pass one with --split."
            )
        samples = source.split(split)
        paths = [s.path for s in samples]
        index = {name: i for i, name in enumerate(self.classes)}
        labels = np.array([index[s.label] for s in samples], dtype=np.int64)
        stacked, kept_all, cached = [], np.ones(len(paths), dtype=bool), []
        for member, name in zip(self.members, self.names, strict=True):
            file = self.cache_dir / f"{_cache_key(member, paths, tta)}.npz"
            hit = _read_cache(file, len(paths), len(member.classes))
            cached.append(hit is not None)
            if hit is None:
                hit = _run_member(member.classifier(), paths, tta, reporter, f"{name} {split}")
                _write_cache(file, *hit)
            probs, kept = hit
            order = [member.classes.index(c) for c in self.classes]
            stacked.append(np.asarray(probs, dtype=np.float64)[:, order])
            kept_all &= kept
        if not kept_all.any():
            raise DataError(f"no image of the {split} split of {source.spec} could be read by every member.")
        probs = np.stack(stacked)[:, kept_all]
        return _SplitPredictions(
            paths=[p for p, k in zip(paths, kept_all, strict=True) if k],
            labels=labels[kept_all],
            probs=probs,
            cached=cached,
            skipped=int((~kept_all).sum()),
        )

    def vote(
        self,
        data: str | Path,
        split: str = "test",
        method: str = "hard",
        prefer: str | Path | None = None,
        weights: str | Sequence[float] | None = None,
        tta: bool = False,
        out: str | Path | None = None,
        reporter: Reporter | str | None = "quiet",
    ) -> VoteResult:
        """Score every member and their vote on a split of DATA; with `out`, write the vote's files there.

        Ties go to `prefer` (default: the member with the best accuracy on the valid split).
        `weights` is for method `weighted`: numbers, one per member, or `auto` (the default there),
        fitted on the valid split. `tta` averages each image with its horizontal flip.

        >>> result = Ensemble(["runs/a", "runs/b", "runs/c"]).vote("builtin:digits", method="soft")
        >>> result.ensemble.accuracy >= min(m.accuracy for m in result.members)
        True
        """
        import numpy as np

        from fastcls.reporting import as_reporter

        spec = get_method(method)
        count = len(self.members)
        parsed = parse_weights(weights, count)
        if parsed is not None and not spec.weighted:
            raise ConfigError(
                f"--weights is for --method weighted; {method} counts every member the same. "
                "Add --method weighted, or leave out --weights."
            )
        if spec.weighted and parsed is None:
            parsed = "auto"
        prefer_index = None if prefer is None else self.member_index(prefer)
        report = as_reporter(reporter)
        source, notes = self._source(data)
        target = self._predict_split(source, split, tta, report)
        cached = list(target.cached)
        valid = target
        if split != "valid" and (prefer_index is None or parsed == "auto"):
            valid = self._predict_split(source, "valid", tta, report)
            cached = [a and b for a, b in zip(cached, valid.cached, strict=True)]
        prefer_source = "given"
        if prefer_index is None:
            on_valid = [_scores(_ranked(p), valid.labels, p) for p in valid.probs]
            prefer_index = min(range(count), key=lambda i: (-on_valid[i].accuracy, on_valid[i].log_loss, i))
            prefer_source = "best on valid"
        if parsed == "auto":
            used = [float(w) for w in fit_weights(valid.probs, valid.labels)]
            weights_source = "auto (fitted on valid: least log-loss)"
            if split == "valid":
                notes.append("the weights were fitted on the split they are scored on (valid): optimistic scores.")
        elif parsed is None:
            used, weights_source = [1.0 / count] * count, "equal"
        else:
            used, weights_source = list(parsed), "given"
        scores, ranked = combine(target.probs, method, used if spec.weighted else None, prefer_index)
        members = []
        for i, member in enumerate(self.members):
            own = _scores(_ranked(target.probs[i]), target.labels, target.probs[i])
            members.append(
                MemberScore(
                    run=str(member.path),
                    name=self.names[i],
                    size=member.size,
                    accuracy=own.accuracy,
                    top5=own.top5,
                    log_loss=own.log_loss,
                    weight=used[i],
                    cached=cached[i],
                )
            )
        tops = target.probs.argmax(-1)
        result = VoteResult(
            data=source.spec,
            split=split,
            n=len(target.labels),
            skipped=target.skipped,
            method=method,
            tta=tta,
            classes=list(self.classes),
            members=members,
            ensemble=_scores(ranked, target.labels, scores if spec.probabilistic else None),
            agreement=[[float((tops[i] == tops[j]).mean()) for j in range(count)] for i in range(count)],
            oracle=float((tops == target.labels).any(0).mean()),
            weights=used,
            weights_source=weights_source,
            prefer=str(self.members[prefer_index].path),
            prefer_name=self.names[prefer_index],
            prefer_source=prefer_source,
            notes=notes,
            paths=[str(p) for p in target.paths],
            labels=target.labels,
            member_probs=target.probs,
            scores=np.asarray(scores),
            ranked=ranked,
        )
        if out is not None:
            result.save(out)
        return result


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


# -- an ensemble.json as a classifier ---------------------------------------------------------
class EnsembleClassifier:
    """A saved vote used as one model, with ImageClassifier's `classes`, `predict_proba` and `predict`.

    >>> clf = load_ensemble("ensemble-20250101-120000/ensemble.json")
    >>> clf.predict(["a.png"])[0].label in clf.classes
    True
    """

    def __init__(
        self, ensemble: Ensemble, method: str, weights: Sequence[float] | None, prefer: int, tta: bool = False
    ) -> None:
        spec = get_method(method)
        self.ensemble, self.method, self.prefer, self.tta = ensemble, method, prefer, tta
        self.weights = list(weights) if spec.weighted and weights is not None else None

    @property
    def classes(self) -> list[str]:
        return self.ensemble.classes

    def _vote(self, images: list[str | Path] | str | Path):
        import numpy as np

        paths = expand_images([images] if isinstance(images, str | Path) else list(images))
        stacked, kept_all = [], np.ones(len(paths), dtype=bool)
        for member, name in zip(self.ensemble.members, self.ensemble.names, strict=True):
            probs, kept = _run_member(member.classifier(), paths, self.tta, None, name)
            stacked.append(probs[:, [member.classes.index(c) for c in self.classes]])
            kept_all &= kept
        if not kept_all.any():
            raise DataError(f"none of the {len(paths)} image(s) could be read, first: {paths[0]}.")
        scores, ranked = combine(np.stack(stacked)[:, kept_all], self.method, self.weights, self.prefer)
        return scores, ranked, [p for p, k in zip(paths, kept_all, strict=True) if k]

    def predict_proba(self, images: list[str | Path] | str | Path):
        """(an (N, classes) array of ensemble scores, the paths they belong to); for hard, vote shares."""
        scores, _, paths = self._vote(images)
        return scores, paths

    def predict(self, images: list[str | Path] | str | Path, top: int = 3) -> list[Prediction]:
        """The ensemble's class for each image, with the `top` classes and their scores."""
        scores, ranked, paths = self._vote(images)
        k = max(1, min(top, len(self.classes)))
        results = []
        for path, row, order in zip(paths, scores, ranked, strict=True):
            best = [(self.classes[i], float(row[i])) for i in order[:k]]
            results.append(Prediction(str(path), best[0][0], best[0][1], best))
        return results


def load_ensemble(path: str | Path) -> EnsembleClassifier:
    """Rebuild the vote recorded in an ensemble.json (or a folder holding one) as a classifier."""
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "ensemble.json"
    if not file.is_file():
        raise RunError(f"{file} does not exist; give the ensemble.json written by `fastcls ensemble vote`.")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
        if raw.get("format") != ENSEMBLE_FORMAT:
            raise KeyError("format")
        runs = [Path(m) if Path(m).is_absolute() else file.parent / m for m in raw["members"]]
        method, weights, prefer, tta = raw["method"], raw.get("weights"), raw["prefer"], bool(raw.get("tta"))
        classes = set(raw["classes"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise RunError(
            f"{file} is not an ensemble.json written by `fastcls ensemble vote` (missing or bad {exc})."
        ) from None
    ensemble = Ensemble(runs)
    if set(ensemble.classes) != classes:
        raise RunError(
            f"{file} was voted over classes {', '.join(sorted(classes))} but its members now have "
            f"{', '.join(ensemble.classes)}; vote again with `fastcls ensemble vote`."
        )
    try:
        prefer_index = ensemble.member_index(prefer)
    except ConfigError:
        raise RunError(f"{file}: its preferred member {prefer} is not among its members.") from None
    return EnsembleClassifier(ensemble, method, weights, prefer_index, tta)
