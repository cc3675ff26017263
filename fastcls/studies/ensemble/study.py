"""An ensemble of trained runs: vote their predictions on a split, and use an ensemble.json as one
classifier (`load_ensemble`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fastcls.errors import ConfigError, DataError, RunError, did_you_mean
from fastcls.predictions import Prediction, expand_images

if TYPE_CHECKING:
    from fastcls.data.sources import ImageSource
    from fastcls.reporting import Reporter
from fastcls.studies.ensemble.members import (
    Member,
    SplitPredictions,
    cache_key,
    check_classes,
    default_cache_dir,
    display_names,
    read_cache,
    run_member,
    write_cache,
)
from fastcls.studies.ensemble.results import MemberScore, VoteResult, rank_classes, score_ranked
from fastcls.studies.ensemble.votes import ENSEMBLE_FORMAT, combine, fit_weights, get_method, parse_weights

__all__ = [
    "Ensemble",
    "EnsembleClassifier",
    "load_ensemble",
]


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
        self.members = [Member(run) for run in runs]
        seen: dict[Path, int] = {}
        for i, member in enumerate(self.members):
            if member.path in seen:
                raise ConfigError(
                    f"run {member.path} is given twice (members {seen[member.path] + 1} and {i + 1}); "
                    "give each run once, and use --method weighted --weights to count one more."
                )
            seen[member.path] = i
        self.classes = check_classes(self.members)
        self.names = display_names(self.members)
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

    def _predict_split(self, source: ImageSource, split: str, tta: bool, reporter: Reporter) -> SplitPredictions:
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
            file = self.cache_dir / f"{cache_key(member, paths, tta)}.npz"
            hit = read_cache(file, len(paths), len(member.classes))
            cached.append(hit is not None)
            if hit is None:
                hit = run_member(member.classifier(), paths, tta, reporter, f"{name} {split}")
                write_cache(file, *hit)
            probs, kept = hit
            order = [member.classes.index(c) for c in self.classes]
            stacked.append(np.asarray(probs, dtype=np.float64)[:, order])
            kept_all &= kept
        if not kept_all.any():
            raise DataError(f"no image of the {split} split of {source.spec} could be read by every member.")
        probs = np.stack(stacked)[:, kept_all]
        return SplitPredictions(
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
            on_valid = [score_ranked(rank_classes(p), valid.labels, p) for p in valid.probs]
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
            own = score_ranked(rank_classes(target.probs[i]), target.labels, target.probs[i])
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
            ensemble=score_ranked(ranked, target.labels, scores if spec.probabilistic else None),
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
            probs, kept = run_member(member.classifier(), paths, self.tta, None, name)
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
