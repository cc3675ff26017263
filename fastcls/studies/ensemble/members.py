"""The runs of an ensemble: each member's card, its predictions on a split (cached by weights,
images and TTA), and the class list they must share.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fastcls.errors import DataError, FastclsError, RunError
from fastcls.model_card import ModelCard
from fastcls.runs import atomic_write_bytes, require_run

if TYPE_CHECKING:
    import numpy as np

    from fastcls.api import ImageClassifier
    from fastcls.reporting import Reporter


__all__ = [
    "Member",
    "SplitPredictions",
    "cache_key",
    "check_classes",
    "default_cache_dir",
    "default_ensemble_name",
    "display_names",
    "read_cache",
    "run_member",
    "write_cache",
]


_CACHE_FORMAT = "fastcls.predictions/1"


# -- members ----------------------------------------------------------------------------------
class Member:
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


def run_member(clf: ImageClassifier, paths: Sequence[Path], tta: bool, reporter: Reporter | None, label: str):
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


def cache_key(member: Member, paths: Sequence[Path], tta: bool) -> str:
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


def read_cache(file: Path, n: int, classes: int):
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


def write_cache(file: Path, probs: np.ndarray, kept: np.ndarray) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, probs=probs, kept=kept)
    with contextlib.suppress(OSError):  # a read-only cache only costs time
        atomic_write_bytes(file, buffer.getvalue())


def default_cache_dir() -> Path:
    """`$FASTCLS_HOME/cache/predictions`: shared by every copy of a run, and never inside a run folder."""
    from fastcls.data.builtin import fastcls_home

    return fastcls_home() / "cache" / "predictions"


def check_classes(members: list[Member]) -> list[str]:
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


def display_names(members: list[Member]) -> list[str]:
    names = [m.name for m in members]
    if len(set(names)) == len(names):
        return names
    return [f"{i + 1}:{name}" for i, name in enumerate(names)]


def default_ensemble_name() -> str:
    return f"ensemble-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


@dataclass
class SplitPredictions:
    paths: list[Path]
    labels: np.ndarray  # (N,) indices into the ensemble's classes
    probs: np.ndarray  # (members, N, classes), ensemble class order
    cached: list[bool]
    skipped: int
