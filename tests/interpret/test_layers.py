"""Finding the penultimate features and the last conv stage in cnn, timm and torchvision models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastcls.config import CnnConfig
from fastcls.errors import ConfigError
from fastcls.models.layers import cam_layer, first_conv, penultimate, preserved, reshape_tokens, resolve_layer
from fastcls.models.registry import build_model, resolve_arch


def _model(arch: str, size: int = 64):
    torch.manual_seed(0)
    spec = resolve_arch(arch)
    return build_model(spec, 5, size, CnnConfig(blocks=3, filters=8, dense=24)).eval(), spec.family


@pytest.mark.parametrize(
    ("arch", "dim", "layer"),
    [
        ("cnn", 24, "features.block3.bn"),
        ("test_resnet", None, None),
        ("torchvision:mobilenet_v3_small", 1024, "features"),
    ],
)
def test_penultimate_feeds_the_classifier_and_cam_layer_is_spatial(arch, dim, layer):
    model, family = _model(arch)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = penultimate(model, x)
        classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        logits = model(x)
    assert features.shape[0] == 2 and (dim is None or features.shape[1] == dim)
    assert torch.allclose(classifier(features), logits, atol=1e-5)  # the classifier's input, exactly
    name = cam_layer(model, family, x)
    assert layer is None or name == layer
    captured = []
    handle = resolve_layer(model, name).register_forward_hook(lambda _m, _a, out: captured.append(out))
    with torch.no_grad():
        model(x)
    handle.remove()
    assert captured[0].dim() == 4 and captured[0].shape[-1] * captured[0].shape[-2] > 1


def test_timm_penultimate_is_pre_logits():
    model, _ = _model("test_resnet")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.equal(penultimate(model, x), expected)
    assert cam_layer(model, "timm", x) == model.feature_info[-1]["module"] == "layer4"
    assert cam_layer(model, "timm", torch.randn(1, 3, 32, 32)) == "layer3"  # layer4 is 1x1 there


def test_unknown_layer_names_close_matches_and_convs():
    model, _ = _model("cnn")
    with pytest.raises(ConfigError) as error:
        resolve_layer(model, "features.block3.bm")
    assert "Did you mean: features.block3.bn" in str(error.value) and "features.block1.conv" in str(error.value)
    assert first_conv(model)[0] == "features.block1.conv"


def test_preserved_restores_modes_flags_grads_and_inplace():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 6, 6))
    model.train()
    model[0].weight.requires_grad_(False)
    with preserved(model):
        assert not model.training and not model[1].inplace and model[0].weight.requires_grad
        model(torch.randn(2, 3, 6, 6)).sum().backward()
    assert model.training and model[1].inplace and not model[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_reshape_tokens_drops_the_class_token():
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)
    maps = reshape_tokens(tokens)
    assert maps.shape == (2, 3, 4, 4) and torch.equal(maps[0, :, 0, 0], tokens[0, 1])
    assert reshape_tokens(torch.zeros(1, 2, 3, 3)).shape == (1, 2, 3, 3)
