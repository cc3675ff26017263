"""EmbeddingSnapshots: hooks called directly, then inside a real fastai fit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fastcls.config import CnnConfig
from fastcls.data.images import Preprocessing
from fastcls.data.loaders import Batches, DecodedSplit
from fastcls.errors import ConfigError
from fastcls.interpret.embeddings import read_snapshots
from fastcls.models.layers import penultimate
from fastcls.models.scratch import ConfigurableCNN
from fastcls.train.snapshots import EmbeddingSnapshots, snapshot_path


def _data(n: int = 40, size: int = 8, seed: int = 0) -> tuple[Batches, torch.nn.Module]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.arange(n) % 3
    prep = Preprocessing(size=size, mean=(0.5,) * 3, std=(0.25,) * 3)
    torch.manual_seed(seed)
    model = ConfigurableCNN(CnnConfig(blocks=2, filters=4, dense=6), 3, size)
    return Batches(DecodedSplit(images, labels, [], []), prep, 16), model


def test_every_kth_epoch_and_the_last_with_the_same_images(tmp_path):
    valid, model = _data()
    callback = EmbeddingSnapshots(every=2, folder=tmp_path, batches=valid, limit=25)
    callback.learn = SimpleNamespace(model=model.train())
    for _ in range(5):
        callback.after_epoch()
    callback.after_fit()
    callback.after_fit()  # a second end of fit at the same epoch writes nothing new
    assert [p.name for p in callback.written] == [
        "epoch-002.safetensors",
        "epoch-004.safetensors",
        "epoch-005.safetensors",
    ]
    assert model.training  # back in train mode
    tensors = load_file(str(snapshot_path(tmp_path, 4)))
    assert tensors["features"].dtype == torch.float16 and tensors["labels"].dtype == torch.int64
    assert torch.equal(tensors["labels"], valid.split.labels[:25])
    with torch.no_grad():
        expected = penultimate(model.eval(), valid.normalise(valid.split.images[:25]))
    torch.testing.assert_close(tensors["features"].float(), expected, atol=2e-2, rtol=1e-2)
    epochs = [epoch for epoch, _, _ in read_snapshots(tmp_path)]
    assert epochs == [2, 4, 5]


def test_state_round_trips_and_bad_every_is_a_user_error(tmp_path):
    valid, _ = _data()
    callback = EmbeddingSnapshots(every=3, folder=tmp_path, batches=valid, start_epoch=4)
    other = EmbeddingSnapshots(every=3, folder=tmp_path, batches=valid)
    other.load_state_dict(callback.state_dict())
    assert other.epochs_done == 4
    with pytest.raises(ConfigError, match="--embed-every 0"):
        EmbeddingSnapshots(every=0, folder=tmp_path, batches=valid)


def test_in_a_real_fastai_fit(tmp_path):
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner

    train, model = _data(48, seed=1)
    valid, _ = _data(24, seed=2)
    callback = EmbeddingSnapshots(every=1, folder=tmp_path, batches=valid)
    learn = Learner(DataLoaders(train, valid), model, loss_func=torch.nn.CrossEntropyLoss(), cbs=[callback])
    if hasattr(learn, "progress"):
        learn.remove_cb(learn.progress)
    with learn.no_logging():
        learn.fit(2, lr=1e-2)
    snapshots = read_snapshots(tmp_path)
    assert [epoch for epoch, _, _ in snapshots] == [1, 2]
    first, second = snapshots[0][1], snapshots[1][1]
    assert first.shape == second.shape == (24, 6) and not np.allclose(first, second)  # the model moved on


def test_lr_range_test_epochs_are_not_counted(tmp_path):
    from fastcls.train.callbacks import LRSweep

    valid, model = _data()
    callback = EmbeddingSnapshots(every=1, folder=tmp_path, batches=valid)
    callback.learn = SimpleNamespace(model=model, cbs=[LRSweep(), callback])
    callback.after_epoch()
    callback.after_fit()
    assert callback.epochs_done == 0 and not (tmp_path / "embeddings").exists()
