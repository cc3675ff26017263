"""Penultimate-feature snapshots during training, for `interpret`'s per-epoch PCA and t-SNE panels.

A fastai callback: after every `every`-th epoch, and when a fit ends (the last epoch of a phase,
or an early stop), it computes the penultimate features of the first `limit` validation images
and writes `FOLDER/embeddings/epoch-NNN.safetensors` (`features` float16 (N, D), `labels` int64
(N,)). The validation batches are not shuffled, so every snapshot holds the same images.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from fastai.callback.core import Callback

from fastcls.config import flag
from fastcls.errors import ConfigError
from fastcls.models.layers import penultimate
from fastcls.runs import atomic_write_bytes

__all__ = ["SNAPSHOT_FORMAT", "EmbeddingSnapshots", "snapshot_path"]

SNAPSHOT_FORMAT = "fastcls.embeddings/1"
_FLOAT16_MAX = 65504.0


def snapshot_path(folder: str | Path, epoch: int) -> Path:
    return Path(folder) / "embeddings" / f"epoch-{epoch:03d}.safetensors"


class EmbeddingSnapshots(Callback):
    """Write penultimate features of a fixed validation subset every `every` epochs.

    `folder` is the run folder being written (the staging folder during training); `batches`
    yields (normalised images, labels), e.g. the valid `Batches`. Epochs are counted across fit
    calls (phases), starting after `start_epoch` (for a resumed run).

    >>> cb = EmbeddingSnapshots(every=2, folder=run_dir, batches=valid)  # doctest: +SKIP
    >>> learn.fit(6, cbs=[cb])  # doctest: +SKIP  (writes epoch-002, epoch-004, epoch-006)
    """

    order = 66  # after EpochLog (60) and Checkpoints (65): the epoch is complete

    def __init__(
        self,
        every: int,
        folder: str | Path,
        batches: Iterable[tuple[Any, Any]],
        limit: int = 500,
        start_epoch: int = 0,
    ) -> None:
        if every < 1:
            raise ConfigError(f"{flag('embed_every')} {every} must be at least 1 (snapshot every K-th epoch).")
        self.every, self.folder, self.batches, self.limit = every, Path(folder), batches, limit
        self.epochs_done = start_epoch
        self.written: list[Path] = []
        self._last = -1

    def state_dict(self) -> dict[str, int]:
        return {"epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epochs_done = int(state["epochs_done"])

    def _probing(self) -> bool:
        """True during an LR range test (its epochs are not training epochs) or on a non-zero
        rank of a distributed run (rank 0 writes the files)."""
        from fastai.callback.schedule import LRFinder
        from fastai.torch_core import rank_distrib

        from fastcls.train.callbacks import LRSweep

        return rank_distrib() != 0 or any(isinstance(cb, LRSweep | LRFinder) for cb in getattr(self.learn, "cbs", []))

    def after_epoch(self) -> None:
        if self._probing():
            return
        self.epochs_done += 1
        if self.epochs_done % self.every == 0:
            self.snapshot()

    def after_fit(self) -> None:
        if self.epochs_done > 0 and self._last != self.epochs_done and not self._probing():
            self.snapshot()

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, D) float32 on the CPU, labels (N,) int64) of the first `limit` images."""
        model = self.learn.model
        was_training = model.training
        features, labels, seen = [], [], 0
        try:
            model.eval()
            with torch.no_grad():
                for x, y in self.batches:
                    take = min(len(y), self.limit - seen)
                    features.append(penultimate(model, x[:take]).float().cpu())
                    labels.append(torch.as_tensor(y[:take]).long().cpu())
                    seen += take
                    if seen >= self.limit:
                        break
        finally:
            model.train(was_training)
        if not features:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return torch.cat(features), torch.cat(labels)

    def snapshot(self) -> Path | None:
        """Write this epoch's snapshot now; None (and nothing written) when the features are not finite."""
        from safetensors.torch import save

        self._last = self.epochs_done
        features, labels = self.features()
        if not len(labels) or not bool(torch.isfinite(features).all()):
            return None
        tensors = {"features": features.clamp(-_FLOAT16_MAX, _FLOAT16_MAX).half().contiguous(), "labels": labels}
        path = snapshot_path(self.folder, self.epochs_done)
        atomic_write_bytes(path, save(tensors, metadata={"format": SNAPSHOT_FORMAT, "epoch": str(self.epochs_done)}))
        self.written.append(path)
        return path
