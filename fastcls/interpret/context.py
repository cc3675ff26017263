"""What every interpretation plot needs, computed once: the model, the split's images, labels,
probabilities and losses, and (lazily) the penultimate features and the layer to explain.

A split that fits the memory budget is decoded once and kept; a larger one is scored in streamed
batches, and the few images a plot shows are decoded when it asks for them (`LazyImages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = ["Context", "LazyImages", "NothingToDraw", "Options", "load_context"]

CHUNK = 256


class LazyImages:
    """uint8 images of files, decoded when indexed (an int, a slice, or a sequence of indices), so
    a split larger than memory can still be drawn from. Indexing gives (3, S, S) or (k, 3, S, S)."""

    def __init__(self, paths: list[Path], prep: Any) -> None:
        self.paths, self.prep = paths, prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Any) -> Any:
        import numpy as np
        import torch

        from fastcls.data.loaders import decode_paths
        from fastcls.errors import DataError

        if isinstance(key, int | np.integer):
            return self[[int(key)]][0]
        rows = range(len(self))[key] if isinstance(key, slice) else [int(i) for i in key]
        arrays, errors = decode_paths([self.paths[i] for i in rows], self.prep)
        if errors:  # it was read when scored; it changed since
            raise DataError(f"an image changed while interpreting: {errors[0]}")
        if not arrays:
            return torch.zeros(0, 3, self.prep.size, self.prep.size, dtype=torch.uint8)
        return torch.from_numpy(np.stack(arrays))


@dataclass
class Options:
    """Settings shared by the plots: `layer` for cam/guided (default: last conv stage), how many
    `units` guided backprop explains, how many `images` cam and top_losses show, and the `seed`
    that picks sample images."""

    layer: str | None = None
    units: int = 10
    images: int = 8
    seed: int = 0


class Context:
    """A loaded run scored on one split; numpy arrays for the drawing code, torch for the model."""

    def __init__(self, run: Path, clf: Any, data: str, split: str, scores: Any, images: Any, options: Options) -> None:
        import numpy as np

        self.run, self.clf, self.data, self.split, self.options = run, clf, data, split, options
        self.plots = run / "plots"
        self.model, self.classes, self.prep, self.family = clf.model, list(clf.classes), clf.preprocessing, clf.family
        # uint8 (N, 3, S, S) as the model sees them before normalisation: a tensor, or LazyImages
        self.images = images
        self.paths = scores.paths
        self.labels = scores.labels.numpy().astype(np.int64)
        self.skipped = len(scores.skipped)
        self.probs = scores.probs.numpy().astype(np.float64)
        self.predicted = self.probs.argmax(axis=1)
        self.losses = -np.log(np.clip(self.probs[np.arange(len(self.labels)), self.labels], 1e-12, None))
        self.history = clf.history

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def normalised(self, indices: Any) -> Any:
        """Model-ready float batch of the chosen images."""
        from fastcls.data.batching import normalise

        return normalise(self.images[list(indices)], self.prep, self.device)

    def chunks(self) -> Any:
        """(start, model-ready batch) over the whole split, CHUNK images at a time."""
        for start in range(0, self.n, CHUNK):
            yield start, self.normalised(range(start, min(start + CHUNK, self.n)))

    @cached_property
    def grey(self) -> bool:
        """Whether the images are grey (three equal channels), judged on the first 64."""
        sample = self.images[: min(64, self.n)]
        return bool((sample[:, 0] == sample[:, 1]).all() and (sample[:, 1] == sample[:, 2]).all())

    @cached_property
    def confusion(self) -> Any:
        """Counts[true, predicted] over every class, as scikit-learn computes it."""
        from sklearn.metrics import confusion_matrix

        return confusion_matrix(self.labels, self.predicted, labels=list(range(len(self.classes))))

    @cached_property
    def features(self) -> Any:
        """(N, D) float32 penultimate features of every image, in eval mode without gradients."""
        import numpy as np
        import torch

        from fastcls.models.layers import penultimate

        was_training = self.model.training
        chunks = []
        try:
            self.model.eval()
            with torch.inference_mode():
                for _, batch in self.chunks():
                    chunks.append(penultimate(self.model, batch).float().cpu().numpy())
        finally:
            self.model.train(was_training)
        return np.concatenate(chunks).astype(np.float32)

    @cached_property
    def layer_name(self) -> str:
        """The layer cam and guided explain: --layer, else the last convolutional stage."""
        from fastcls.models.layers import cam_layer, resolve_layer

        if self.options.layer:
            resolve_layer(self.model, self.options.layer)
            return self.options.layer
        return cam_layer(self.model, self.family, self.normalised(range(1)))

    def sample(self, count: int, salt: int = 0) -> Any:
        """`count` image indices spread over the classes (round-robin, seeded), sorted by class."""
        import numpy as np

        rng = np.random.default_rng(self.options.seed + salt)
        per_class = [rng.permutation(np.flatnonzero(self.labels == c)).tolist() for c in range(len(self.classes))]
        per_class = [rows for rows in per_class if rows]
        order = rng.permutation(len(per_class))
        chosen: list[int] = []
        while len(chosen) < min(count, self.n):
            for c in order:
                if per_class[c] and len(chosen) < count:
                    chosen.append(per_class[c].pop())
        return np.array(sorted(chosen, key=lambda i: (self.labels[i], i)), dtype=np.int64)


def load_context(run: str | Path, data: str | Path | None, split: str | None, options: Options, reporter: Any):
    """Load the run and score the split with the run's own preprocessing (in memory when it fits the
    budget, else streamed)."""
    import torch

    from fastcls.api import load
    from fastcls.data.loaders import Batches, label_index
    from fastcls.data.pipeline import scoring_loader
    from fastcls.runs import require_run
    from fastcls.scoring import score

    folder = require_run(run)
    clf = load(folder)
    spec, split, samples = clf._split_samples(data, split)
    index = label_index(samples, clf.classes)
    labels = torch.tensor([index[s.label] for s in samples], dtype=torch.long)
    device = next(clf.model.parameters()).device
    loader = scoring_loader(
        [s.path for s in samples], labels, clf.preprocessing, CHUNK, device, clf.config.data.on_bad_image, reporter,
        split,
    )  # fmt: skip
    scores = score(clf.model, loader, reporter=reporter, description=f"score {split}")
    images = loader.split.images if isinstance(loader, Batches) else LazyImages(scores.paths, clf.preprocessing)
    return Context(folder, clf, spec, split, scores, images, options)


class NothingToDraw(Exception):
    """A plot has no input in this run (e.g. no metrics.csv); `interpret` notes the reason and goes on."""
