"""The configurable from-scratch CNN of the iNaturalist study.

Each block is conv -> activation -> (BatchNorm) -> 2x2 max-pool; then flatten, one dense layer,
dropout and the output layer. Pooling uses ceil mode, so any input size down to 1x1 works
(an 8x8 digit survives five blocks).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

from torch import nn

from fastcls.config import CnnConfig
from fastcls.registry import Registry

__all__ = ["ACTIVATIONS", "ORGANISATIONS", "ConfigurableCNN", "block_widths", "check_cnn_config"]

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation", {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
})  # fmt: skip
ORGANISATIONS: Registry[Callable[[int, int], int]] = Registry("organisation", {
    "same": lambda filters, i: filters,
    "double": lambda filters, i: filters * 2**i,
    "half": lambda filters, i: max(1, filters // 2**i),
})  # fmt: skip


def check_cnn_config(config: CnnConfig) -> None:
    """Reject activation/organisation names that no registry entry knows."""
    ACTIVATIONS.check(config.activation)
    ORGANISATIONS.check(config.organisation)


def block_widths(config: CnnConfig) -> list[int]:
    """Output channels of each block under the chosen organisation."""
    return [ORGANISATIONS[config.organisation](config.filters, i) for i in range(config.blocks)]


class ConfigurableCNN(nn.Module):
    """`features` (block1..blockN) then `head` (flatten, fc, act, dropout, out)."""

    def __init__(self, config: CnnConfig, num_classes: int, size: int, in_channels: int = 3) -> None:
        super().__init__()
        check_cnn_config(config)
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        channels, side = in_channels, size
        for i, width in enumerate(block_widths(config), start=1):
            layers: OrderedDict[str, nn.Module] = OrderedDict(
                conv=nn.Conv2d(channels, width, config.kernel, padding=config.kernel // 2),
                act=ACTIVATIONS[config.activation](),
            )
            if config.bn:
                layers["bn"] = nn.BatchNorm2d(width)
            layers["pool"] = nn.MaxPool2d(2, ceil_mode=True)
            blocks[f"block{i}"] = nn.Sequential(layers)
            channels, side = width, math.ceil(side / 2)
        self.features = nn.Sequential(blocks)
        self.head = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc=nn.Linear(channels * side * side, config.dense),
                act=ACTIVATIONS[config.activation](),
                dropout=nn.Dropout(config.dropout),
                out=nn.Linear(config.dense, num_classes),
            )
        )

    def forward(self, x):
        return self.head(self.features(x))
