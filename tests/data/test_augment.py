"""Augmentation policies: every op of the registry is per image, seeded and repeatable; presets and the
[data.aug] table compose them; random crops reach the whole image; validation is never augmented."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch
from PIL import Image

import fastcls
from fastcls.api import as_reporter
from fastcls.config import Config
from fastcls.data.augment import OPS, PRESETS, Policy, build_policy, resolve_settings
from fastcls.data.images import Preprocessing
from fastcls.data.sources import ImageSource, Sample
from fastcls.errors import ConfigError

# settings that switch exactly one op on, strongly enough that most seeds change the image
ONE_OP = {
    "crop": {"crop_scale": 0.3, "crop_ratio": 4 / 3},
    "rotate": {"rotate": 40},
    "hflip": {"hflip": 0.5},
    "vflip": {"vflip": 0.5},
    "randaugment": {"auto_aug": "randaugment", "magnitude": 15},
    "trivialaugment": {"auto_aug": "trivialaugment"},
    "autoaugment": {"auto_aug": "autoaugment"},
    "jitter": {"jitter": 0.5, "hue": 0.1},
    "blur": {"blur": 0.5, "blur_sigma": 2.0},
    "erasing": {"erasing": 0.5},
}


def photo(height: int = 48, width: int = 72) -> torch.Tensor:
    """A colourful uint8 (3, H, W) image with structure (gradients and a block), channels-last like Pillow's."""
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
    array[height // 4 : height // 2, width // 5 : width // 2] = (250, 20, 90)
    return torch.from_numpy(array.astype(np.uint8)).permute(2, 0, 1)


def test_the_registry_has_every_op_of_the_issue():
    assert set(OPS) == set(ONE_OP)


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_is_per_image_seeded_and_repeatable(name):
    policy = Policy(resolve_settings("none", ONE_OP[name]), 32)
    assert policy.names == [name]
    image = photo()
    source = image if policy.crops else torch.nn.functional.interpolate(image[None].float(), (32, 32))[0].byte()
    outputs = [policy(source, seed) for seed in range(8)]
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.uint8 for o in outputs)
    assert torch.equal(policy(source, 0), outputs[0]) and torch.equal(policy(source, 5), outputs[5])
    assert len({o.numpy().tobytes() for o in outputs}) >= 2  # seeds differ, so images differ
    assert torch.equal(source, image if policy.crops else source)  # the input is left untouched


def test_a_policy_leaves_the_global_rng_where_it_was():
    policy = build_policy("strong", None, 32, "bilinear")
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    policy(photo(), 11)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_policies_of_registry_ops(name):
    policy = build_policy(name, None, 32, "bilinear")
    if name == "none":
        assert policy is None
        return
    assert policy.crops and set(policy.names) <= set(OPS)
    assert torch.equal(policy(photo(), 4), policy(photo(), 4)) and policy(photo(), 4).shape == (3, 32, 32)


def test_the_data_aug_table_overrides_its_preset(tmp_path):
    toml = tmp_path / "plants.toml"
    toml.write_text('[data.aug]\npreset = "standard"\nhflip = 0.8\nvflip = 0.3\nblur = 0.5\n')
    config = fastcls.load_config(toml)
    settings = resolve_settings(config.data.aug.preset, config.data.aug.overrides())
    assert settings["hflip"] == 0.8 and settings["vflip"] == 0.3 and settings["blur"] == 0.5
    assert settings["rotate"] == 30 and settings["crop_scale"] == 0.35  # the rest from the preset
    again = Config.from_dict(tomllib.loads(config.to_toml()))
    assert again.data.aug == config.data.aug  # config.toml repeats it
    old_style = Config.from_dict({"data": {"aug": "light"}})  # configs written before the table
    assert old_style.data.aug.preset == "light"
    flat = Config().merged(Config.nest({"aug": "strong", "vflip": 0.2, "auto_aug": "randaugment"}))
    assert (flat.data.aug.preset, flat.data.aug.vflip, flat.data.aug.auto_aug) == ("strong", 0.2, "randaugment")
    with pytest.raises(ConfigError, match="Did you mean: strong"):
        Config.from_dict({"data": {"aug": "strng"}})
    with pytest.raises(ConfigError, match=r"hflip=1\.5 is out of range"):
        Config.from_dict({"data": {"aug": {"hflip": 1.5}}})
    with pytest.raises(ConfigError, match="auto_aug"):
        Config.from_dict({"data": {"aug": {"auto_aug": "randaug"}}})


def _banded(path, width: int = 300, height: int = 200, band: int = 40) -> None:
    """Green, with a red band on the left and a blue one on the right that a centre crop cuts off."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, :, 1] = 200
    array[:, :band] = (255, 0, 0)
    array[:, -band:] = (0, 0, 255)
    Image.fromarray(array).save(path)


def _has_red(image: torch.Tensor) -> bool:
    red, green = image[0].int(), image[1].int()
    return bool(((red > 200) & (green < 60)).any())


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_a_random_resized_crop_reaches_pixels_the_centre_crop_cuts(tmp_path, loader):
    from fastcls.data.images import load_image
    from fastcls.data.pipeline import TrainingData

    _banded(tmp_path / "wide.png")
    prep = Preprocessing(64, resize="crop", crop_pct=1.0)
    assert not _has_red(torch.from_numpy(load_image(tmp_path / "wide.png", prep)))  # what validation sees
    samples = [Sample(tmp_path / "wide.png", "a", "train")] * 8 + [Sample(tmp_path / "wide.png", "b", "valid")]
    source = ImageSource("wide", "csv", samples, ["a", "b"])
    settings = Config().merged({"data": {"aug": {"crop_scale": 0.2}, "workers": 0}}).data
    policy = build_policy("none", settings.aug.overrides(), prep.size, prep.interpolation)
    data = TrainingData(source, prep, settings, policy, loader, 0, as_reporter("quiet"))
    train, _ = data.loaders(prep, 4, seed=0, channels_last=False)
    pixels = [
        (x * torch.tensor(prep.std).view(1, 3, 1, 1) * 255 + torch.tensor(prep.mean).view(1, 3, 1, 1) * 255).round()
        for _ in range(3)
        for x, _ in train
    ]
    assert any(_has_red(image) for batch in pixels for image in batch)


def test_only_training_batches_are_augmented(class_folders):
    clf = fastcls.ImageClassifier("cnn", blocks=2, epochs=1, aug="standard")
    trainer = clf._prepare(clf._resolve(class_folders, {}), as_reporter("quiet"), None)
    assert isinstance(trainer.learn.dls.train.augment, Policy) and trainer.learn.dls.valid.augment is None
    assert trainer.learn.dls.train.augment.names == ["crop", "rotate", "hflip", "blur"]
