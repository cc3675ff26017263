"""Speed switches change what runs: bf16 autocast, channels-last tensors; fp16 refuses the CPU."""

from __future__ import annotations

import pytest
import torch
from fastai.callback.core import Callback

import fastcls
from fastcls.api import as_reporter
from fastcls.errors import ConfigError


class Probe(Callback):
    order = 5  # before Autocast turns predictions back to fp32

    def __init__(self) -> None:
        self.pred_dtypes, self.input_channels_last = set(), set()

    def before_batch(self) -> None:
        self.input_channels_last.add(self.xb[0].is_contiguous(memory_format=torch.channels_last))

    def after_pred(self) -> None:
        self.pred_dtypes.add(self.pred.dtype)


def fit(data, **options):
    clf = fastcls.ImageClassifier("cnn", **({"blocks": 2, "epochs": 1, "seed": 0, "size": 16} | options))
    trainer = clf._prepare(clf._resolve(data, {}), as_reporter("quiet"), None)
    probe = Probe()
    trainer.learn.add_cb(probe)
    clf.history = trainer.fit()
    return clf, probe


def test_bf16_autocasts_the_forward_pass_on_the_cpu(class_folders):
    clf, probe = fit(class_folders, precision="bf16")
    assert probe.pred_dtypes == {torch.bfloat16}
    assert torch.isfinite(torch.tensor(clf.history[-1]["train_loss"]))
    _, plain = fit(class_folders)
    assert plain.pred_dtypes == {torch.float32}


def test_channels_last_reaches_inputs_and_weights_and_saves_plainly(tmp_path, class_folders):
    clf, probe = fit(class_folders, channels_last=True)
    assert probe.input_channels_last == {True}
    assert clf.model.features.block1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    loaded = fastcls.load(clf.save(tmp_path / "run"))
    images = sorted(class_folders.rglob("*.png"))[:4]
    assert (clf.predict_proba(images)[0] - loaded.predict_proba(images)[0]).max() < 1e-5


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine fp16 is allowed")
def test_fp16_needs_a_gpu(class_folders):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        fastcls.ImageClassifier("cnn", precision="fp16").fit(class_folders, quiet=True)
