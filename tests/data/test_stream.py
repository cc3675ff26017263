"""The streaming loader: the same batches as in memory, reproducible for any number of workers,
resumable, class-balanced on request, and chosen by the memory budget."""

from __future__ import annotations

import pytest
import torch

import fastcls
from fastcls.api import as_reporter
from fastcls.config import Config
from fastcls.data.batching import class_weights, sample_weights
from fastcls.data.images import Preprocessing
from fastcls.data.pipeline import choose_loader, gpu_resident, prepare_data, resolve_workers
from fastcls.data.sources import resolve_source
from fastcls.errors import DataError


def _loaders(folder, loader: str, workers: int, aug: str = "none", balance: str = "none", seed: int = 3):
    settings = Config().merged(Config.nest({"loader": loader, "workers": workers, "aug": aug, "balance": balance})).data
    source = resolve_source(folder, 0.2, seed)
    prep = Preprocessing(16, mean=(0.4, 0.4, 0.4), std=(0.3, 0.3, 0.3))
    data = prepare_data(source, prep, settings, as_reporter("quiet"))
    return data, *data.loaders(prep, 8, seed, channels_last=False)


def _epochs(loader, count: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for _ in range(count) for x, y in loader]


def _same(a, b) -> bool:
    pairs = zip(a, b, strict=False)
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in pairs)


def test_stream_and_memory_give_identical_batches_without_augmentation(class_folders):
    _, memory, memory_valid = _loaders(class_folders, "memory", 0)
    _, stream, stream_valid = _loaders(class_folders, "stream", 0)
    assert type(memory).__name__ == "Batches" and type(stream).__name__ == "ItemBatches"
    batches = _epochs(memory)
    assert len(batches) == 2 * (64 // 8) and not torch.equal(batches[0][1], batches[8][1])  # reshuffled
    assert _same(batches, _epochs(stream))
    assert _same(_epochs(memory_valid, 1), _epochs(stream_valid, 1))
    _, two_workers, _ = _loaders(class_folders, "stream", 2)
    assert _same(batches, _epochs(two_workers))


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_augmented_batches_repeat_for_any_worker_count_and_resume_exactly(class_folders, loader):
    _, none, _ = _loaders(class_folders, loader, 0)
    _, serial, _ = _loaders(class_folders, loader, 0, aug="standard")
    _, parallel, _ = _loaders(class_folders, loader, 2, aug="standard")
    first = _epochs(serial, 1)
    assert _same(first, _epochs(parallel, 1))
    assert not torch.equal(first[0][0], _epochs(none, 1)[0][0])  # it is augmented
    saved = serial.generator.get_state()  # what resume.pt keeps after epoch 1
    second = _epochs(serial, 1)
    _, resumed, _ = _loaders(class_folders, loader, 2, aug="standard")
    resumed.generator.set_state(saved)
    assert _same(second, _epochs(resumed, 1))


def test_unreadable_files_met_while_streaming_are_skipped_or_stop_the_run(class_folders):
    (class_folders / "0" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    data, train, valid = _loaders(class_folders, "stream", 0)
    assert data.counts[0] + data.counts[1] == 81  # unknown until the file is met
    seen = sum(len(y) for _, y in train.plain()) + sum(len(y) for _, y in valid)
    assert seen == 80
    assert data.skipped_count == 0  # plain() is a new loader; the run's own loaders met nothing yet
    for loader in (train, valid):
        for _ in loader:
            pass
    assert data.skipped_count == 1 and "zz-broken.png" in (train.skipped + valid.skipped)[0]
    settings = Config().merged({"data": {"loader": "stream", "workers": 0, "on_bad_image": "error"}}).data
    source = resolve_source(class_folders, 0.2, 3)
    prep = Preprocessing(16)
    strict = prepare_data(source, prep, settings, as_reporter("quiet"))
    with pytest.raises(DataError, match=r"zz-broken\.png"):
        for loader in strict.loaders(prep, 8, 3, channels_last=False):
            for _ in loader:
                pass


def test_balance_sampler_draws_classes_equally_and_loss_weights_them(tmp_path):
    from tests_support import write_class_folders

    folder = write_class_folders(tmp_path / "imbalanced", per_class=10, classes=2)
    more = write_class_folders(tmp_path / "more", per_class=30, classes=1, start=10)
    for n, path in enumerate(sorted(more.rglob("*.png"))):
        path.rename(folder / "0" / f"more-{n}.png")
    labels = torch.tensor([0] * 40 + [1] * 10)
    assert torch.allclose(class_weights(labels, 2), torch.tensor([50 / 80, 50 / 20]))
    assert sample_weights(labels, 2)[:40].sum() == pytest.approx(sample_weights(labels, 2)[40:].sum())
    data, train, _ = _loaders(folder, "memory", 0, balance="sampler")
    assert torch.equal(torch.bincount(data.labels["train"]), torch.tensor([32, 8]))  # valid: 8 + 2
    drawn = torch.cat([y for _ in range(20) for _, y in train])
    share = float((drawn == 1).float().mean())
    assert 0.4 < share < 0.6  # 20% of the images, half of the draws
    plain = _loaders(folder, "memory", 0)[1]
    assert float((torch.cat([y for _, y in plain]) == 1).float().mean()) < 0.3
    assert data.class_weights() is None
    assert torch.allclose(_loaders(folder, "memory", 0, balance="loss")[0].class_weights(), torch.tensor([0.625, 2.5]))


def test_balance_loss_reaches_the_cross_entropy(class_folders):
    clf = fastcls.ImageClassifier("cnn", blocks=2, epochs=1, balance="loss")
    trainer = clf._prepare(clf._resolve(class_folders, {}), as_reporter("quiet"), None)
    assert torch.allclose(trainer.learn.loss_func.weight, torch.ones(4))  # 16 of each class: equal weights


def test_the_choice_of_loader_workers_and_gpu_residency():
    assert choose_loader("auto", 10, 100) == "memory" and choose_loader("auto", 101, 100) == "stream"
    assert choose_loader("stream", 10, 100) == "stream"
    with pytest.raises(DataError, match="--loader stream"):
        choose_loader("memory", 101, 100)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_workers(None, "memory", True, cpu) == 0 and resolve_workers(3, "stream", False, cpu) == 3
    assert resolve_workers(None, "stream", False, cpu) >= 1 and resolve_workers(None, "memory", True, cuda) >= 1
    assert gpu_resident(2**30, cuda, free_bytes=8 * 2**30)  # an eighth of what is free
    assert not gpu_resident(3 * 2**30, cuda, free_bytes=8 * 2**30)  # over the quarter
    assert not gpu_resident(1, cpu, free_bytes=8 * 2**30)  # never on the CPU


def test_a_tiny_memory_budget_streams_and_trains_to_the_same_accuracy(monkeypatch):
    settings = {"blocks": 2, "filters": 16, "epochs": 2, "size": 8, "seed": 1, "workers": 0}
    memory = fastcls.ImageClassifier("cnn", **settings).fit("builtin:digits", quiet=True)
    assert memory.config.data.loader == "memory"
    monkeypatch.setenv("FASTCLS_MEMORY_BUDGET", "100000")  # 100 kB: far below 1,438 images at 8 px
    lines: list[str] = []
    reporter = as_reporter("quiet")
    monkeypatch.setattr(reporter, "info", lines.append)
    streamed = fastcls.ImageClassifier("cnn", **settings).fit("builtin:digits", reporter=reporter)
    assert streamed.config.data.loader == "stream"
    assert any("loader: stream" in line and "over the" in line for line in lines)
    accuracy = streamed.evaluate().accuracy
    assert abs(accuracy - memory.evaluate().accuracy) <= 0.02 and accuracy > 0.6


def test_data_stays_on_the_host_when_the_gpu_has_too_little_free_memory(class_folders):
    data, _, _ = _loaders(class_folders, "memory", 0)
    data.place(torch.device("cuda"), free_bytes=1000)  # 80 images of 16 px need 61 kB: over a quarter of 1 kB
    assert all(split.images.device.type == "cpu" for split in data.decoded.values())
    assert data.device.type == "cuda"  # batches still go to the model's device


def test_both_loaders_feed_the_feature_cache_the_same_images_and_order(class_folders):
    """The Trainer's head-only feature cache (fastcls.train.features) reads a loader through `in_order()`
    and draws its epochs through `draw_epoch()`: the streaming loader offers both, equal to memory's."""
    from fastcls.train.features import FeatureBatches

    _, memory, _ = _loaders(class_folders, "memory", 0)
    _, stream, _ = _loaders(class_folders, "stream", 2)
    assert _same(list(memory.in_order(bs=5)), list(stream.in_order(bs=5)))
    features = torch.arange(memory.n, dtype=torch.float32).view(-1, 1)
    cached = [FeatureBatches(features, memory.labels, loader) for loader in (memory, stream)]
    assert _same(_epochs(cached[0]), _epochs(cached[1]))
    assert _same(_epochs(memory), _epochs(stream))  # the feature epochs advanced both generators alike
    first = _epochs(cached[0], 1)
    assert sorted(torch.cat([x for x, _ in first]).view(-1).tolist()) == list(range(memory.n))  # each once
