"""--precise-bn: after every epoch the BatchNorm statistics are those of the final weights on the train
split's un-augmented images, and training itself (augmented batches, dropout) is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fastcls
from tests_support import write_class_folders


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("precise")
    write_class_folders(root / "train", per_class=8, classes=10)  # 80 images: 5 whole batches of 16
    write_class_folders(root / "valid", per_class=3, classes=10, start=8)
    return root


def _fit(folder, **settings) -> fastcls.ImageClassifier:
    clf = fastcls.ImageClassifier("cnn", blocks=2, filters=8, dense=16)
    return clf.fit(folder, epochs=2, bs=16, size=16, seed=3, aug="light", quiet=True, **settings)


def _first_bn_input_mean(clf: fastcls.ImageClassifier, folder) -> torch.Tensor:
    """The per-channel mean of what the first BatchNorm layer sees over the whole train split, un-augmented,
    with the final weights: what its running mean must be after a precise re-estimate over every batch."""
    prep = clf.preprocessing
    paths = sorted((folder / "train").glob("*/*.png"))
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255 for p in paths])
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2) - torch.tensor(prep.mean)[:, None, None]) / torch.tensor(
        prep.std
    )[:, None, None]
    bn = next(m for m in clf.model.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    hook = bn.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    try:
        with torch.no_grad():
            clf.model.eval()(x)
    finally:
        hook.remove()
    return seen[0].mean(dim=(0, 2, 3))


def test_statistics_fit_the_final_weights_and_training_is_unchanged(split_folder):
    plain, precise = _fit(split_folder, precise_bn=0), _fit(split_folder, precise_bn=200)
    for (name, a), b in zip(plain.model.named_parameters(), precise.model.parameters(), strict=True):
        assert torch.equal(a, b), name  # training never reads running statistics, nor draws for the pass

    expected = _first_bn_input_mean(precise, split_folder)
    first = next(m for m in precise.model.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.allclose(first.running_mean, expected, atol=1e-5)
    stale = next(m for m in plain.model.modules() if isinstance(m, nn.BatchNorm2d))
    assert (stale.running_mean - expected).abs().max() > 100 * 1e-5  # a running average lags behind
    assert precise.config.train.precise_bn == 200 and plain.config.train.precise_bn == 0


def test_the_weights_average_gets_statistics_of_its_own_weights(split_folder):
    """--ema --keep ema ships the average: its BatchNorm statistics are recomputed for its weights too."""
    clf = _fit(split_folder, ema=0.9, keep="ema", precise_bn=200)
    assert clf.checkpoint_epochs.get("ema") == 2
    first = next(m for m in clf.model.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.allclose(first.running_mean, _first_bn_input_mean(clf, split_folder), atol=1e-5)


def test_by_default_the_pass_takes_at_most_a_quarter_of_an_epoch():
    from fastcls.train.batchnorm import PreciseBatchNorm

    auto = PreciseBatchNorm(None, [])
    assert [auto.limit(n) for n in (2, 19, 400, 5000)] == [1, 4, 100, 200]
    assert PreciseBatchNorm(7, []).limit(19) == 7  # --precise-bn N is taken as given
