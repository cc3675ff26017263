"""Architecture names resolve through the alias table, timm and torchvision; near misses get hints."""

from __future__ import annotations

import pytest
import torch

from fastcls.errors import ArchError
from fastcls.models.registry import ALIASES, build_model, default_preprocessing, resolve_arch


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias_resolves_to_a_timm_model(alias):
    spec = resolve_arch(alias)
    assert spec.family == "timm" and spec.name == ALIASES[alias]


def test_families_and_forced_torchvision():
    assert resolve_arch("cnn").family == "cnn"
    assert resolve_arch("alexnet").family == "torchvision"
    assert resolve_arch("torchvision:resnet18") == resolve_arch("tv:resnet18").__class__(
        "torchvision:resnet18", "resnet18", "torchvision"
    )


@pytest.mark.parametrize(("name", "hint"), [("resnet19", "resnet18"), ("cnnn", "cnn"), ("tv:resnet19", "resnet18")])
def test_unknown_names_suggest_close_ones(name, hint):
    with pytest.raises(ArchError, match=f"Did you mean: .*{hint}"):
        resolve_arch(name)


@pytest.mark.parametrize("name", ["resnet18", "tv:resnet18", "mobilenet_small"])
def test_built_models_have_the_requested_head(name):
    spec = resolve_arch(name)
    model = build_model(spec, num_classes=7, size=32).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_preprocessing_comes_from_the_pretrained_cfg():
    lite = default_preprocessing(resolve_arch("efficientnet_lite0"), None, 8)
    assert (lite.size, lite.mean, lite.std, lite.resize) == (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "crop")
    assert default_preprocessing(resolve_arch("resnet18"), 96, 8).size == 96
    scratch = default_preprocessing(resolve_arch("cnn"), None, 8)
    assert (scratch.size, scratch.resize) == (8, "squish")
    assert default_preprocessing(resolve_arch("cnn"), None, 500).size == 224
