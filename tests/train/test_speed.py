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


@pytest.mark.parametrize("limit", [1, 5, 37, 64, 100, 4096])
def test_largest_fitting_finds_the_boundary_with_few_tries(limit):
    from fastcls.train.speed import largest_fitting

    tried = []

    def fits(n):
        tried.append(n)
        return n <= limit

    assert largest_fitting(fits, start=16, limit=4096) == limit
    assert len(tried) <= 2 * 12 + 2  # doubling then bisection, never a linear scan
    assert largest_fitting(lambda n: False, start=16, limit=64) == 0
    assert largest_fitting(lambda n: True, start=16, limit=50) == 50


def test_bs_auto_on_the_cpu_is_the_documented_default_and_is_recorded(tmp_path, class_folders):
    from fastcls.train.speed import CPU_BATCH_SIZE

    config = fastcls.Config().merged(
        fastcls.Config.nest({"source": str(class_folders), "bs": "auto", "blocks": 2, "epochs": 1})
        | {"run": {"out": str(tmp_path / "r")}}
    )
    assert config.data.bs == "auto"
    clf, path = fastcls.train_run(config, reporter="quiet")
    assert clf.config.data.bs == CPU_BATCH_SIZE == 64
    assert fastcls.load_config(path / "config.toml").data.bs == 64
    with pytest.raises(ConfigError, match="wrong type"):
        fastcls.Config().merged({"data": {"bs": "big"}})


def test_compile_compiles_the_model_and_keeps_plain_weight_names(tmp_path, class_folders, monkeypatch):
    import torch._dynamo

    monkeypatch.setenv("FASTCLS_COMPILE_BACKEND", "eager")  # inductor needs minutes here; the wiring is the same
    torch._dynamo.reset()
    clf, _ = fit(class_folders, compile=True)
    assert clf.model._compiled_call_impl is not None  # nn.Module.compile was applied
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # dynamo traced the forward
    assert all(not key.startswith("_orig_mod") for key in clf.model.state_dict())
    path = clf.save(tmp_path / "r")
    images = sorted(str(p) for p in class_folders.rglob("*.png"))[:8]
    assert (fastcls.load(path).predict_proba(images)[0] == clf.predict_proba(images)[0]).all()
    torch._dynamo.reset()
