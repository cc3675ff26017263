"""The configurable CNN builds what its settings say, at any input size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastcls.config import CnnConfig
from fastcls.errors import ConfigError
from fastcls.models.scratch import ACTIVATIONS, ORGANISATIONS, ConfigurableCNN, block_widths


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_builds_and_runs(activation):
    model = ConfigurableCNN(CnnConfig(blocks=2, filters=4, activation=activation), num_classes=3, size=8)
    assert isinstance(model.features.block1.act, ACTIVATIONS[activation])
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize(
    ("organisation", "widths"), [("same", [8, 8, 8]), ("double", [8, 16, 32]), ("half", [8, 4, 2])]
)
def test_organisation_sets_filters_per_block(organisation, widths):
    config = CnnConfig(blocks=3, filters=8, organisation=organisation)
    assert organisation in ORGANISATIONS and block_widths(config) == widths
    model = ConfigurableCNN(config, num_classes=2, size=16)
    assert [model.features[i].conv.out_channels for i in range(3)] == widths


def test_block_order_bn_switch_dropout_and_dense():
    with_bn = ConfigurableCNN(CnnConfig(blocks=2, kernel=5, dropout=0.3, dense=64), num_classes=10, size=8)
    assert list(with_bn.features.block1._modules) == ["conv", "act", "bn", "pool"]
    assert with_bn.features.block1.conv.kernel_size == (5, 5)
    assert with_bn.head.dropout.p == 0.3 and with_bn.head.fc.out_features == 64
    no_bn = ConfigurableCNN(CnnConfig(blocks=2, bn=False), num_classes=10, size=8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())


def test_five_blocks_work_on_eight_pixel_images():
    model = ConfigurableCNN(CnnConfig(blocks=5), num_classes=10, size=8)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match="Did you mean: relu"):
        ConfigurableCNN(CnnConfig(activation="rellu"), num_classes=2, size=8)
