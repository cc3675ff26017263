"""Score image files with a model, batch by batch: the probabilities behind evaluate, predict,
ensemble and interpret.

The files come through `fastcls.data.pipeline.scoring_loader`: decoded at once when they fit the
memory budget, else streamed by DataLoader workers, so scoring a folder of any size holds only a
few batches of pixels (plus one row of probabilities per image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastcls.data.batching import Loader
from fastcls.data.images import Preprocessing
from fastcls.device import inference_batch
from fastcls.errors import DataError
from fastcls.reporting import Reporter

__all__ = ["Scores", "score", "score_files"]


@dataclass
class Scores:
    """Softmax probabilities (N, classes) on the CPU, the labels given, and the files the rows belong
    to (unreadable files are left out and listed in `skipped`)."""

    probs: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    skipped: list[str]

    def rows(self, given: Sequence[Path]) -> list[int]:
        """Where each scored row sits in `given`, the files in the order they were scored from
        (rows keep that order; unreadable files are the gaps)."""
        rows, at = [], 0
        for path in self.paths:
            while given[at] != path:
                at += 1
            rows.append(at)
            at += 1
        return rows


def score(
    model: nn.Module, loader: Loader, tta: bool = False, reporter: Reporter | None = None, description: str = "score"
) -> Scores:
    """Run `model` in eval mode without gradients over `loader`'s batches, in order. With `tta`, the
    mean of each image's and its horizontal mirror's probabilities."""
    probs, labels, paths = [], [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), (reporter or Reporter("quiet")).task(description, len(loader)) as task:
            for x, y, kept in loader.iter_indexed():
                out = model(x).float().softmax(-1)
                if tta:
                    out = (out + model(x.flip(-1)).float().softmax(-1)) / 2
                probs.append(out.cpu())
                labels.append(y.cpu())
                paths += [loader.paths[i] for i in kept]
                task.advance()
    finally:
        model.train(was_training)
    if not paths:
        first = loader.skipped[0] if loader.skipped else "no images"
        raise DataError(f"none of the {loader.n} image(s) could be read, first error: {first}.")
    return Scores(torch.cat(probs), torch.cat(labels), paths, loader.skipped)


def score_files(
    model: nn.Module,
    prep: Preprocessing,
    paths: Sequence[Path],
    labels: torch.Tensor | None = None,
    *,
    tta: bool = False,
    on_bad_image: str = "skip",
    reporter: Reporter | None = None,
    description: str = "score",
    bs: int | None = None,
) -> Scores:
    """Probabilities of `model` for image files fed as `prep` says (labels default to zeros), `bs` at a
    time (default: `fastcls.device.inference_batch`)."""
    from fastcls.data.pipeline import scoring_loader

    device = next(model.parameters()).device
    labels = labels if labels is not None else torch.zeros(len(paths), dtype=torch.long)
    bs = bs or inference_batch(device)
    loader = scoring_loader(paths, labels, prep, bs, device, on_bad_image, reporter, description)
    return score(model, loader, tta, reporter, description)
