"""The probes score what a representation holds: raw digit pixels separate the classes, a constant does not,
and the same weights always give the same score."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastcls.data.images import Preprocessing
from fastcls.data.loaders import decode_split
from fastcls.data.sources import resolve_source
from fastcls.pretrain.probe import run_probe


class Constant(nn.Module):
    def forward(self, x):
        return torch.ones(len(x), 4)


@pytest.fixture(scope="module")
def digits():
    source = resolve_source("builtin:digits")
    prep = Preprocessing(size=8, resize="squish")
    train = decode_split(source.split("train"), source.classes, prep)
    valid = decode_split(source.split("valid"), source.classes, prep)
    return train, valid, prep


@pytest.mark.parametrize("kind", ["knn", "linear"])
def test_probes_separate_raw_pixels_and_not_a_constant(digits, kind):
    train, valid, prep = digits
    cpu = torch.device("cpu")
    pixels = run_probe(kind, nn.Flatten(), train, valid, 10, prep, cpu)
    constant = run_probe(kind, Constant(), train, valid, 10, prep, cpu)
    assert pixels.accuracy > 0.9 and pixels.valid == len(valid.labels) and pixels.train == len(train.labels)
    assert constant.accuracy < 0.2  # one prediction for every image: about one class in ten
    assert run_probe(kind, nn.Flatten(), train, valid, 10, prep, cpu).accuracy == pixels.accuracy  # deterministic
