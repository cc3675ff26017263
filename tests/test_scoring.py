"""Commands that score images stream a split larger than the memory budget in batches, with the
same results as decoding it at once: evaluate, predict, ensemble members, interpret, sensitivity."""

from __future__ import annotations

import pytest
import torch

import fastcls
from fastcls.data import pipeline
from fastcls.data.stream import ItemBatches

TINY = "20000"  # bytes: far less than digits' test split (359 images x 3 x 8 x 8 = 69 kB)


@pytest.fixture
def over_budget(monkeypatch):
    """A tiny FASTCLS_MEMORY_BUDGET; decoding a whole split at once fails, and the largest batch
    streamed is recorded."""
    largest = []
    real = ItemBatches.iter_indexed

    def watched(self):
        for x, y, kept in real(self):
            largest.append(len(kept))
            yield x, y, kept

    def refuse(*args, **kwargs):
        raise AssertionError("a whole split was decoded into memory")

    monkeypatch.setenv("FASTCLS_MEMORY_BUDGET", TINY)
    monkeypatch.setattr(pipeline, "decode_paths", refuse)
    monkeypatch.setattr(ItemBatches, "iter_indexed", watched)
    return largest


def test_evaluate_and_predict_stream_a_folder_larger_than_the_budget(trained_run, request):
    clf = fastcls.load(trained_run)
    in_memory = clf.evaluate()
    folder = fastcls.resolve_source("builtin:digits").split("test")[0].path.parents[1]
    expected = clf.predict(folder)
    largest = request.getfixturevalue("over_budget")
    streamed = clf.evaluate()
    predictions = clf.predict(folder)
    assert largest and max(largest) <= 256  # batches, never the whole split
    assert streamed.n == in_memory.n == len(expected) > 256
    assert streamed.accuracy == in_memory.accuracy and streamed.confusion == in_memory.confusion
    assert streamed.loss == pytest.approx(in_memory.loss, rel=1e-5)
    assert [p.path for p in predictions] == [p.path for p in expected]
    assert [p.label for p in predictions] == [p.label for p in expected]
    pairs = zip(predictions, expected, strict=True)
    assert all(p.probability == pytest.approx(q.probability, abs=1e-6) for p, q in pairs)


def test_interpret_and_sensitivity_stream_over_the_budget(trained_run, request):
    from fastcls.interpret.context import LazyImages, Options, load_context
    from fastcls.studies.sensitivity import sensitivity

    kept = load_context(trained_run, None, "valid", Options(), None)
    ranked = sensitivity(trained_run, method="grad-norm", batches=4, bs=32)
    request.getfixturevalue("over_budget")
    ctx = load_context(trained_run, None, "valid", Options(), None)
    assert isinstance(ctx.images, LazyImages) and isinstance(kept.images, torch.Tensor)
    assert ctx.n == kept.n and (ctx.predicted == kept.predicted).all()
    assert torch.equal(ctx.images[[0, 5]], kept.images[[0, 5]]) and ctx.grey == kept.grey
    assert ctx.features == pytest.approx(kept.features, abs=1e-4)
    streamed = sensitivity(trained_run, method="grad-norm", batches=4, bs=32)
    assert streamed.names(5) == ranked.names(5)
