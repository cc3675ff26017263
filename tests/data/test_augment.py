"""Augmentation presets change training batches reproducibly and never touch validation."""

from __future__ import annotations

import pytest
import torch

import fastcls
from fastcls.api import as_reporter
from fastcls.data.augment import PRESETS, Augment, get_augment
from fastcls.errors import ConfigError


def batch() -> torch.Tensor:
    return torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "none"])
def test_presets_change_images_reproducibly(name):
    augment = get_augment(name)
    first = augment(batch(), torch.Generator().manual_seed(1))
    again = augment(batch(), torch.Generator().manual_seed(1))
    other = augment(batch(), torch.Generator().manual_seed(2))
    assert first.shape == batch().shape and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.allclose(first, other)
    assert not torch.allclose(first, batch())


def test_identity_and_a_pure_flip_are_exact():
    images = batch()
    assert torch.allclose(Augment()(images, torch.Generator().manual_seed(0)), images, atol=1e-5)
    flipped = Augment(flip=1.0)(images, torch.Generator().manual_seed(0))
    assert torch.allclose(flipped, images.flip(-1), atol=1e-5)


def test_only_training_batches_are_augmented(class_folders):
    clf = fastcls.ImageClassifier("cnn", blocks=2, epochs=1, aug="standard")
    trainer = clf._prepare(clf._resolve(class_folders, {}), as_reporter("quiet"), None)
    assert trainer.learn.dls.train.augment is PRESETS["standard"] and trainer.learn.dls.valid.augment is None
    with pytest.raises(ConfigError, match="Did you mean: strong"):
        fastcls.ImageClassifier("cnn", aug="strng").fit(class_folders, quiet=True)
