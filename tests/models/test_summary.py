"""Parameter and FLOP counts match hand computations on a model small enough to count by hand."""

from __future__ import annotations

from fastcls.config import CnnConfig
from fastcls.models.scratch import ConfigurableCNN
from fastcls.models.summary import summarize


def test_counts_for_a_one_block_cnn():
    config = CnnConfig(blocks=1, filters=4, kernel=3, bn=False, dense=8)
    model = ConfigurableCNN(config, num_classes=2, size=8)
    result = summarize(model, "cnn", size=8, num_classes=2)
    conv = 3 * 4 * 9 + 4
    fc = 4 * 4 * 4 * 8 + 8
    out = 8 * 2 + 2
    assert result.params == conv + fc + out
    conv_flops = 2 * (8 * 8 * 4) * (3 * 9)
    linear_flops = 2 * (4 * 4 * 4 * 8) + 2 * (8 * 2)
    assert result.flops == conv_flops + linear_flops
    assert [g["name"] for g in result.groups] == ["block1", "head"]
    assert sum(g["params"] for g in result.groups) == result.params
