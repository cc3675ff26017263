"""A training run built from its settings, in steps that each return what they made:
settings -> data -> model -> placed model -> trainer. `build_run` runs them in order.

Settings left open are resolved here and written back into the config (the strategy and LR
defaults, the arch's full name, the input size, `--bs auto`'s pick), so the run's config.toml
repeats it exactly. `ImageClassifier.fit` and `lr_find` call `build_run`; nothing here keeps state.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.config import CnnConfig, Config, flag
from fastcls.data.images import Preprocessing
from fastcls.data.sources import ImageSource, Sample, resolve_source
from fastcls.errors import DataError
from fastcls.model_card import ModelCard
from fastcls.reporting import Reporter

if TYPE_CHECKING:
    from fastcls.models.registry import ArchSpec
    from fastcls.train.distributed import World
    from fastcls.train.learner import Resume, Trainer

__all__ = [
    "Built",
    "build_data",
    "build_network",
    "build_run",
    "build_trainer",
    "check_names",
    "describe_suggestions",
    "model_from_card",
    "place",
    "resolve_settings",
    "with_suggestions",
]


def _is_set(nested: dict[str, Any], given: dict[str, Any]) -> bool:
    """Whether the one setting in `nested` (e.g. {"model": {"cnn": {"blocks": 3}}}) is present in `given`."""
    key, value = next(iter(nested.items()))
    if key not in given:
        return False
    return not isinstance(value, dict) or not isinstance(given[key], dict) or _is_set(value, given[key])


def with_suggestions(config: Config, *given: dict[str, Any]) -> tuple[Config, dict[str, Any]]:
    """`config` with its data's recipe for its arch (`fastcls.data.builtin.SUGGESTED`, e.g. builtin:digits
    for the scratch CNN) in place of the settings that none of `given` (nested, as in the TOML) sets;
    and those settings, flat. Any other data and arch, or a model that starts from weights (a run, a
    file, pretrained): `config` unchanged and {}."""
    from fastcls.data.builtin import suggested_settings

    if config.model.pretrained or config.model.weights:  # the weights' run or card fixes the model and its input
        return config, {}
    suggested = suggested_settings(config.data.source, config.model.arch)
    applied = {k: v for k, v in suggested.items() if not any(_is_set(Config.nest({k: v}), g) for g in given)}
    return (config.merged(Config.nest(applied)) if applied else config), applied


def describe_suggestions(source: str, applied: dict[str, Any]) -> str:
    settings = ", ".join(f"{k} {v}" for k, v in applied.items())
    return f"{source}: its recipe for this arch sets {settings} (any setting you give overrides it)"


@dataclass
class Built:
    """Everything one training run is made of."""

    config: Config
    spec: ArchSpec
    source: ImageSource
    preprocessing: Preprocessing
    data: Any  # fastcls.data.pipeline's TrainingData: loaders, counts, skipped files
    model: Any
    trainer: Trainer
    distributed: dict[str, Any] | None
    sensitive_tensors: dict[str, list[str]]


def check_names(config: Config) -> None:
    """Every setting that names a registered entry names a known one (architecture, optimiser, schedule,
    strategy, augmentation preset, cnn activation/organisation): one clear error before any data is read.
    A sweep runs it on every choice of its space before trial 1."""
    from fastcls.models.registry import resolve_arch
    from fastcls.models.scratch import check_cnn_config
    from fastcls.train.optim import check_optim
    from fastcls.train.strategies import parse_strategy

    if config.train.strategy is not None:
        parse_strategy(config.train.strategy)
    check_optim(config.train)
    config.data.aug.validate()
    if resolve_arch(config.model.arch).family == "cnn":
        check_cnn_config(config.model.cnn)


def model_from_card(model: Any, card: ModelCard, arch: str) -> Any:
    """Fine-tuning a run: the arch must match; a cnn takes the run's own block settings."""
    if card.arch != arch:
        raise DataError(
            f"{flag('weights')} run was trained as {card.arch!r} but {flag('arch')} resolves to {arch!r}; "
            f"pass {flag('arch')} {card.arch}."
        )
    if card.family == "cnn" and card.model_settings:
        model = replace(model, cnn=CnnConfig(**card.model_settings))
    return model


def _median_side(samples: list[Sample], limit: int = 64) -> int:
    """The median short side of up to `limit` training images (headers only, no decoding)."""
    from PIL import Image

    step = max(1, len(samples) // limit)
    sides = []
    for sample in samples[::step][:limit]:
        try:
            with Image.open(sample.path) as image:
                sides.append(min(image.size))
        except (OSError, SyntaxError, ValueError):
            continue
    return int(statistics.median(sides)) if sides else 64


def resolve_settings(config: Config) -> tuple[ArchSpec, ModelCard | None]:
    """Fill the strategy and LR defaults, check every registered name, and resolve the arch; a run folder
    given as --weights fixes the model (its card is returned)."""
    from fastcls.models.registry import resolve_arch
    from fastcls.models.scratch import check_cnn_config
    from fastcls.train.learner import seed_everything

    settings = config.train
    settings.strategy = settings.strategy or ("freeze-unfreeze" if config.model.pretrained else "full")
    settings.lr = settings.lr or (2e-3 if config.model.pretrained else 3e-3)
    check_names(config)
    seed_everything(settings.seed)
    spec = resolve_arch(config.model.arch)
    card = ModelCard.find(config.model.weights)
    if card is not None:
        config.model = model_from_card(config.model, card, spec.name)
        if spec.family == "cnn":
            check_cnn_config(config.model.cnn)
    return spec, card


def build_data(
    config: Config, spec: ArchSpec, card: ModelCard | None, report: Reporter, world: World | None
) -> tuple[ImageSource, Preprocessing, Any]:
    """The labelled files, their preprocessing (the weights' own, or the arch's default; a scratch cnn
    normalises by the data's channel statistics) and the decoded or streamed training data."""
    from fastcls.data.pipeline import prepare_data
    from fastcls.models.registry import default_preprocessing

    seed = config.train.seed
    source = resolve_source(config.data.source, config.data.valid_pct, seed).with_fraction(config.data.fraction, seed)
    if card is not None:  # the weights' own normalisation; the size may change
        prep = Preprocessing.from_dict(card.preprocessing)
        prep = replace(prep, size=config.data.size or prep.size)
    else:
        prep = default_preprocessing(spec, config.data.size, _median_side(source.split("train")))
    data = prepare_data(source, prep, config.data, report, world)
    if spec.family == "cnn" and card is None:
        mean, std = data.channel_stats()
        prep = replace(prep, mean=mean, std=std)
    return source, prep, data


def build_network(
    config: Config, spec: ArchSpec, n_classes: int, prep: Preprocessing, resume: Resume | None, world: World | None
) -> tuple[Any, str]:
    """The model with its first weights (random, pretrained, or about to be restored), and what they are."""
    from fastcls.models.registry import build_model
    from fastcls.models.weights import load_pretrained
    from fastcls.train.learner import seed_everything

    seed_everything(config.train.seed)
    model = build_model(spec, n_classes, prep.size, config.model.cnn, config.model.head_dropout)
    note = "random init"
    if resume is not None:
        note = f"resuming after epoch {resume.state['epoch']}"
    elif config.model.pretrained:
        note = f"weights from {load_pretrained(model, spec.name, spec.family, config.model.weights).source}"
    if world is not None and world.rank:
        seed_everything(config.train.seed + world.rank)  # own dropout/MixUp draws; the weights are the same
    return model, note


def place(
    model: Any, data: Any, prep: Preprocessing, config: Config, world: World | None, report: Reporter
) -> tuple[Any, int, dict[str, Any] | None]:
    """The model and data on the device, in the memory format asked for, compiled if asked; the batch
    size per process (`--bs auto` measured here) and, in a data-parallel run, how it is split."""
    import torch

    from fastcls.device import pick_device
    from fastcls.train.distributed import sync_batchnorm
    from fastcls.train.speed import auto_batch_size, compile_model

    settings = config.train
    if settings.sync_bn:
        model = sync_batchnorm(model, world, report)
    device = pick_device()
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data.place(device)
    if config.data.bs == "auto":
        config.data.bs = auto_batch_size(model, prep.size, device, data.counts[0], settings.channels_last)
        report.info(f"{flag('bs')} auto: batch size {config.data.bs} on {device.type}")
    distributed = None
    if world is None:
        bs = int(config.data.bs)
    else:
        bs = world.batch_size(config.data.bs, config.data.global_bs)
        distributed = world.describe(bs)
        report.info(
            f"{world.size} processes ({world.backend}), batch {bs} per process: effective batch {bs * world.size}"
        )
    if settings.compile:
        compile_model(model)
    return model, bs, distributed


def build_trainer(
    config: Config,
    model: Any,
    data: Any,
    prep: Preprocessing,
    bs: int,
    report: Reporter,
    log_dir: str | Path | None,
    world: World | None,
    stop_after: int | None = None,
    resume: Resume | None = None,
) -> Trainer:
    """The Trainer over the run's loaders, with the callbacks the settings ask for (embedding snapshots,
    frozen or boosted sensitive tensors), restored to `resume` when continuing."""
    from fastcls.train.learner import Trainer
    from fastcls.train.sensitive import read_sensitive
    from fastcls.train.snapshots import EmbeddingSnapshots

    settings = config.train
    shard = world.shard if world is not None else None
    train, valid = data.loaders(prep, bs, settings.seed, settings.channels_last, shard)
    extra = []
    if settings.embed_every and log_dir is not None:
        done = int(resume.state["epoch"]) if resume is not None else 0
        extra.append(EmbeddingSnapshots(settings.embed_every, Path(log_dir), valid, start_epoch=done))
    sensitive = {
        key: read_sensitive(getattr(settings, key))
        for key in ("freeze_sensitive", "boost_sensitive")
        if getattr(settings, key)
    }
    trainer = Trainer(
        model,
        train,
        valid,
        settings,
        report,
        Path(log_dir) / "metrics.csv" if log_dir is not None else None,
        pretrained=config.model.pretrained,
        stop_after=stop_after,
        run_config=config.to_dict(),
        frozen_tensors=sensitive.get("freeze_sensitive"),
        boosted_tensors=sensitive.get("boost_sensitive"),
        extra_callbacks=extra,
        class_weights=data.class_weights(),
        world=world,
    )
    if resume is not None:
        trainer.restore(resume)
    return trainer


def build_run(
    config: Config,
    report: Reporter,
    log_dir: str | Path | None,
    stop_after: int | None = None,
    resume: Resume | None = None,
    callbacks: Sequence[Callable[[Trainer], Any]] = (),
) -> Built:
    """Every step, in order; `callbacks` are factories called with the Trainer (a sweep's per-epoch
    report to Optuna, for example)."""
    from fastcls.train.distributed import current_world

    world = current_world()  # None unless a distributed launcher (torchrun) started this process
    spec, card = resolve_settings(config)
    source, prep, data = build_data(config, spec, card, report, world)
    model, note = build_network(config, spec, len(source.classes), prep, resume, world)
    n_train, n_valid = data.counts
    if world is not None:  # this rank decoded its share only
        n_valid = f"{len(source.split('valid'))} (split over {world.size} processes)"
    report.info(
        f"{spec.name} ({note}): {len(source.classes)} classes, {n_train} train / {n_valid} "
        f"valid images at {prep.size}px, strategy {config.train.strategy}"
    )
    model, bs, distributed = place(model, data, prep, config, world, report)
    trainer = build_trainer(config, model, data, prep, bs, report, log_dir, world, stop_after, resume)
    for make in callbacks:
        trainer.learn.add_cb(make(trainer))
    config.model.arch, config.data.size = spec.name, prep.size
    sensitive = {"frozen": trainer.frozen_tensors, "boosted": trainer.boosted_tensors}
    return Built(config, spec, source, prep, data, model, trainer, distributed, sensitive)
