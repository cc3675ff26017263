"""What every interpretation plot needs, computed once: the model, the split's images, labels,
probabilities and losses, and (lazily) the penultimate features and the layer to explain."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = ["Context", "NothingToDraw", "Options", "load_context"]


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

    def __init__(self, run: Path, clf: Any, data: str, split: str, decoded: Any, options: Options) -> None:
        import numpy as np

        self.run, self.clf, self.data, self.split, self.options = run, clf, data, split, options
        self.plots = run / "plots"
        self.model, self.classes, self.prep, self.family = clf.model, list(clf.classes), clf.preprocessing, clf.family
        self.images = decoded.images  # uint8 (N, 3, S, S), as the model sees them before normalisation
        self.labels = decoded.labels.numpy().astype(np.int64)
        self.skipped = len(decoded.skipped)
        self.probs = clf._probabilities(decoded.images).numpy().astype(np.float64)
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

    def normalised(self, indices: Any = None) -> Any:
        """Model-ready float batch of the chosen images (all when `indices` is None)."""
        from fastcls.data.loaders import Batches, DecodedSplit

        images = self.images if indices is None else self.images[list(indices)]
        split = DecodedSplit(images, images.new_zeros(len(images)).long(), [], [])
        return Batches(split, self.prep, max(len(images), 1), device=self.device).normalise(images)

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

        from fastcls.interpret.layers import penultimate

        was_training = self.model.training
        chunks = []
        try:
            self.model.eval()
            with torch.inference_mode():
                for start in range(0, self.n, 256):
                    batch = self.normalised(range(start, min(start + 256, self.n)))
                    chunks.append(penultimate(self.model, batch).float().cpu().numpy())
        finally:
            self.model.train(was_training)
        return np.concatenate(chunks).astype(np.float32)

    @cached_property
    def layer_name(self) -> str:
        """The layer cam and guided explain: --layer, else the last convolutional stage."""
        from fastcls.interpret.layers import cam_layer, resolve_layer

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
    """Load the run, decode the split with the run's own preprocessing, and score it."""
    from fastcls.api import load
    from fastcls.data.loaders import decode_split
    from fastcls.runs import require_run

    folder = require_run(run)
    clf = load(folder)
    spec, split, samples = clf._split_samples(data, split)
    decoded = decode_split(
        samples, clf.classes, clf.preprocessing, clf.config.data.on_bad_image, reporter, f"decode {split}"
    )
    return Context(folder, clf, spec, split, decoded, options)


class NothingToDraw(Exception):
    """A plot has no input in this run (e.g. no metrics.csv); `interpret` notes the reason and goes on."""
