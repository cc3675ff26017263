"""A new head starts at chance, head-only phases run on cached features, weight decay skips 1-d tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import fastcls
from fastcls.config import CnnConfig, TrainConfig
from fastcls.models.heads import classifier_layer, head_split
from fastcls.models.registry import build_model, resolve_arch
from fastcls.train.optim import no_decay_params, opt_func


@pytest.mark.parametrize("arch", ["cnn", "tf_efficientnet_lite0", "torchvision:resnet18"])
def test_a_new_head_on_pretrained_weights_starts_at_chance(arch, tmp_path):
    from safetensors.torch import save_file

    from fastcls.models.weights import load_pretrained

    torch.manual_seed(0)
    spec = resolve_arch(arch)
    source = build_model(spec, 5, 32, CnnConfig(blocks=2))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = build_model(spec, 10, 32, CnnConfig(blocks=2)).eval()
    assert classifier_layer(model).weight.abs().sum() > 0  # from scratch: the architecture's own init
    load_pretrained(model, spec.name, spec.family, str(tmp_path / "w.safetensors"))
    with torch.no_grad():
        logits = model(torch.randn(8, 3, 32, 32))
    loss = nn.functional.cross_entropy(logits, torch.arange(8))
    assert loss.item() == pytest.approx(math.log(10), abs=1e-6)
    assert classifier_layer(model).weight.abs().sum() == 0


@pytest.mark.parametrize(
    "arch", ["cnn", "tf_efficientnet_lite0", "torchvision:resnet18", "torchvision:mobilenet_v3_small"]
)
def test_head_split_reproduces_the_model(arch):
    from fastcls.models.groups import layer_groups

    torch.manual_seed(0)
    model = build_model(resolve_arch(arch), 4, 32, CnnConfig(blocks=2)).eval()
    nn.init.normal_(classifier_layer(model).weight)  # a head that is not zero, so the check means something
    split = head_split(model, layer_groups(model)[-1].params)
    assert split is not None
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(split.head(split.features(model)(x)), model(x), atol=1e-5)
        assert isinstance(getattr(split.parent, split.attribute), type(split.head))  # put back


def test_no_decay_for_biases_and_norms_while_weights_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    settings = TrainConfig(wd=0.5, lr=0.1)
    groups = [list(model[:2].parameters()), list(model[3].parameters())]
    opt = opt_func(settings, no_decay_params(model))(groups, lr=0.1)
    opt.set_hypers(lr=0.1, wd=0.5)
    assert len(opt.hypers) == 2  # fastai sees layer groups, torch sees a decayed and a plain half of each
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    for name in ("0.bias", "1.weight", "1.bias", "3.bias"):
        assert torch.equal(before[name], after[name]), name  # zero gradient, no decay: unchanged
    for name in ("0.weight", "3.weight"):
        assert torch.allclose(after[name], before[name] * (1 - 0.1 * 0.5)), name  # decoupled decay only


def test_vit_tokens_get_no_decay():
    model = build_model(resolve_arch("vit_tiny_patch16_224"), 3, 32)
    lookup = dict(model.named_parameters())
    no_decay = no_decay_params(model)
    assert id(lookup["pos_embed"]) in no_decay and id(lookup["cls_token"]) in no_decay
    assert id(lookup["blocks.0.attn.qkv.weight"]) not in no_decay


def _head_only(run, cache: bool):
    clf = fastcls.ImageClassifier("cnn", seed=3, epochs=3)
    clf.fit(
        "builtin:digits",
        quiet=True,
        pretrained=True,
        weights=str(run),
        strategy="head",
        lr=1e-2,
        fraction="1/2",
        cache_features=cache,
    )
    return clf


def test_cached_features_train_the_same_head(trained_run):
    cached, plain = _head_only(trained_run, True), _head_only(trained_run, False)
    for (name, a), b in zip(cached.model.state_dict().items(), plain.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name
    assert [r["train_loss"] for r in cached.history] == pytest.approx([r["train_loss"] for r in plain.history])
    assert cached.history[-1]["seconds"] < plain.history[-1]["seconds"]
