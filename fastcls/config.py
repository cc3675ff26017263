"""One typed config, the single source of truth for a run: defaults, then TOML, then CLI flags.

The resolved config is written to every run folder as `config.toml`, and
`fastcls run runs/x/config.toml` repeats that run from it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fastcls.aug_settings import AUTO_AUGMENTS, resolve_settings
from fastcls.errors import ConfigError, did_you_mean
from fastcls.setting_values import (
    check_choice,
    check_range,
    coerce,
    drop_none,
    parse_fraction,
    read_toml,
    settings_differences,
)

__all__ = [
    "BAD_IMAGE_POLICIES",
    "BALANCE_CHOICES",
    "COMMANDS",
    "LOADERS",
    "LR_SUGGESTIONS",
    "AugConfig",
    "CnnConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_settings",
    "load_config",
    "parse_fraction",
    "read_toml",
    "route_dropout",
    "settings_differences",
]

BAD_IMAGE_POLICIES = ("skip", "error")
LOADERS = ("auto", "memory", "stream")  # fastcls.data.pipeline: decode once into memory, or per epoch
BALANCE_CHOICES = ("none", "sampler", "loss")
COMMANDS = ("train", "finetune")
KEEP_CHOICES = ("last", "best-accuracy", "best-valid_loss", "ema", "best-ema")
MONITORS = ("valid_loss", "accuracy")
PRECISIONS = ("fp32", "bf16", "fp16")
LOGGERS = ("csv", "tensorboard", "wandb")  # fastcls.train.tracking.TRACKERS, checked here without importing fastai
LR_SUGGESTIONS = ("valley", "steep", "minimum", "slide")
FROZEN_BN = ("eval", "train", "restart")
# Settings renamed since older run folders were written: (section, old name) -> (new name, value map)
LEGACY = {("train", "freeze_bn"): ("frozen_bn", lambda on: "eval" if on else "restart")}


def parse_log_names(value: str) -> list[str]:
    """`csv`, `tensorboard`, `csv,wandb`, ... -> the tracker names; unknown names are a ConfigError."""
    names = [part.strip() for part in str(value).split(",") if part.strip()] or ["csv"]
    for name in names:
        check_choice("log", name, LOGGERS)
    return names


def route_dropout(flat: dict[str, Any], arch: str) -> dict[str, Any]:
    """A flat `dropout` setting is the cnn's own (`cnn.dropout`) or, for any other arch, the head's
    (`head_dropout`, timm's drop_rate). `arch` may be a comma-separated list (scaling): cnn wins."""
    if "dropout" in flat and "cnn" not in str(arch).split(","):
        flat["head_dropout"] = flat.pop("dropout")
    return flat


@dataclass
class AugConfig:
    """Training-image augmentation, the `[data.aug]` table (fastcls.data.augment: torchvision.transforms.v2,
    per image). `preset` gives the starting values; every other key set here overrides the preset's."""

    preset: str = "none"  # none, light, standard or strong
    crop_scale: float | None = None  # random-resized crop: smallest share of the image area kept (0: none)
    crop_ratio: float | None = None  # random-resized crop: largest aspect change (crops span [1/r, r])
    rotate: float | None = None  # degrees, uniform in [-rotate, rotate]
    hflip: float | None = None  # probability of a horizontal flip
    vflip: float | None = None  # probability of a vertical flip
    auto_aug: str | None = None  # none, randaugment, trivialaugment or autoaugment
    magnitude: int | None = None  # RandAugment's magnitude, 0-30 (default 9)
    jitter: float | None = None  # colour jitter strength: brightness, contrast, saturation
    hue: float | None = None  # colour jitter of hue, 0-0.5
    blur: float | None = None  # probability of a Gaussian blur
    blur_sigma: float | None = None  # largest blur sigma in pixels (default 1.5)
    erasing: float | None = None  # probability of RandomErasing

    def overrides(self) -> dict[str, Any]:
        """The keys set beside the preset."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "preset"}

    def validate(self) -> None:
        values = resolve_settings(self.preset, self.overrides())
        check_range("crop_scale", values["crop_scale"], 0.0, 1.0)
        check_range("crop_ratio", values["crop_ratio"], 1.0, 10.0)
        check_range("rotate", values["rotate"], 0.0, 180.0)
        for name in ("hflip", "vflip", "blur", "erasing"):
            check_range(name, values[name], 0.0, 1.0)
        check_choice("auto_aug", values["auto_aug"], AUTO_AUGMENTS)
        check_range("magnitude", values["magnitude"], 0, 30)
        check_range("jitter", values["jitter"], 0.0, 1.0)
        check_range("hue", values["hue"], 0.0, 0.5)
        check_range("blur_sigma", values["blur_sigma"], 0.1, 100.0)


@dataclass
class DataConfig:
    """Where the images come from and how they are batched."""

    source: str = "builtin:digits"
    valid_pct: float = 0.2
    fraction: float = 1.0
    on_bad_image: str = "skip"
    size: int | None = None  # None: the architecture's input size, else the images' median side
    bs: int | str = 64  # or "auto": the largest batch that fits on the GPU; on the CPU the default 64
    aug: AugConfig = field(default_factory=AugConfig)  # `aug = "standard"` is short for `[data.aug] preset = ...`
    # None: 0 for the in-memory loader on the CPU (measured fastest on 2 cores: benchmarks/workers.py), else
    # min(4, CPUs) DataLoader worker processes; config.toml records the number used
    workers: int | None = None
    loader: str = "auto"  # memory, stream, or auto: memory when the decoded splits fit FASTCLS_MEMORY_BUDGET
    balance: str = "none"  # sampler: class-balanced sampling; loss: class-weighted cross-entropy
    global_bs: bool = False  # data-parallel: bs is all processes' batch together, split evenly (default: per process)

    def validate(self) -> None:
        check_range("valid_pct", self.valid_pct, 0.01, 0.9)
        self.fraction = parse_fraction(self.fraction)
        check_choice("on_bad_image", self.on_bad_image, BAD_IMAGE_POLICIES)
        if self.size is not None:
            check_range("size", self.size, 4, 4096)
        if self.bs != "auto":
            check_range("bs", self.bs, 1, 65536)
        if self.workers is not None:
            check_range("workers", self.workers, 0, 64)
        check_choice("loader", self.loader, LOADERS)
        check_choice("balance", self.balance, BALANCE_CHOICES)
        self.aug.validate()


@dataclass
class CnnConfig:
    """The configurable from-scratch CNN: conv -> act -> (BN) -> maxpool per block, dense, output."""

    blocks: int = 5
    filters: int = 32
    organisation: str = "same"
    kernel: int = 3
    activation: str = "relu"
    bn: bool = True
    dropout: float = 0.2
    dense: int = 256

    def validate(self) -> None:
        check_range("blocks", self.blocks, 1, 12)
        check_range("filters", self.filters, 1, 4096)
        check_range("kernel", self.kernel, 1, 15)
        if self.kernel % 2 == 0:
            raise ConfigError(f"kernel={self.kernel} must be odd (1, 3, 5, ...) to keep 'same' padding.")
        check_range("dropout", self.dropout, 0.0, 0.95)
        check_range("dense", self.dense, 1, 65536)


@dataclass
class ModelConfig:
    """Which network to build; `cnn` settings apply only when arch is 'cnn'."""

    arch: str = "cnn"
    pretrained: bool = False
    weights: str | None = None  # a .safetensors/.pth file or a run folder; None: packaged, then hub
    head_dropout: float | None = None  # timm/torchvision: dropout before the classifier (None: the arch's own)
    cnn: CnnConfig = field(default_factory=CnnConfig)

    def validate(self) -> None:
        if not self.arch or not self.arch.strip():
            raise ConfigError("arch is empty: name a model such as 'cnn', 'resnet18' or 'efficientnet_b0'.")
        if self.weights is not None and not self.pretrained:
            raise ConfigError("weights were given but pretrained is off; use `fastcls finetune` (or pretrained=True).")
        if self.head_dropout is not None:
            check_range("head_dropout", self.head_dropout, 0.0, 0.95)
        self.cnn.validate()


@dataclass
class TrainConfig:
    """The optimisation budget and strategy: one-cycle AdamW over layer groups.

    `lr` None means the default for the job: 3e-3 from scratch, 2e-3 for a pretrained model
    (fastai's fine_tune). `strategy` None means `full` from scratch, `freeze-unfreeze` pretrained.
    With `lr_find`, the LR finder picks `lr` by `lr_suggest`; the pick is what config.toml records.
    """

    epochs: int = 5
    lr: float | None = None
    lr_find: bool = False
    lr_suggest: str = "valley"
    wd: float = 0.01
    seed: int = 42
    strategy: str | None = None
    freeze_epochs: int = 1
    lr_mult: float = 1.0  # measured best on the fine-tune benchmark (README); fastai uses 100
    unfreeze_every: int = 1
    frozen_bn: str = "eval"  # BatchNorm in frozen layer groups: eval (fixed), train (fastai's train_bn), restart
    cache_features: bool = True  # head-only phases train the head on the frozen backbone's features, computed once
    opt: str = "adamw"
    sched: str = "one-cycle"
    momentum: float = 0.9  # SGD momentum; beta1 for lamb/ranger (one-cycle schedules it for Adam*)
    eps: float = 1e-8
    step_size: int | None = None  # step schedule: epochs between drops (default a third of the phase)
    gamma: float = 0.1
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) of MixUp; 0 is off
    cutmix: float = 0.0  # Beta(alpha, alpha) of CutMix; 0 is off
    clip_grad: float | None = None  # max gradient norm
    keep: str = "last"  # which checkpoint becomes model.safetensors
    early_stop: int | None = None  # patience in epochs on `monitor`
    monitor: str = "valid_loss"
    precision: str = "fp32"  # bf16 autocasts on CPU or GPU; fp16 (with a grad scaler) needs a GPU
    channels_last: bool = False
    log: str = "csv"  # comma-separated trackers: csv (metrics.csv, always), tensorboard, wandb
    freeze_sensitive: str | None = None  # FILE:K: the K most sensitive tensors of a sensitivity.csv never train
    boost_sensitive: str | None = None  # FILE:K: those tensors get their own optimiser group (boost_lr, boost_wd)
    boost_lr: float | None = None  # the boosted group's peak LR (required with boost_sensitive)
    boost_wd: float | None = None  # the boosted group's weight decay (default: wd)
    boost_clip: float | None = None  # max gradient norm of the boosted tensors together
    embed_every: int | None = None  # save penultimate features of the valid split every K epochs (interpret)
    compile: bool = False  # torch.compile the model (backend from FASTCLS_COMPILE_BACKEND, default inductor)
    ema: float | None = None  # decay of an exponential moving average of the weights (timm ModelEmaV3), e.g. 0.999
    sync_bn: bool = False  # data-parallel on GPUs: BatchNorm uses the statistics of the whole global batch

    def validate(self) -> None:
        check_range("epochs", self.epochs, 1, 100000)
        if self.lr is not None:
            check_range("lr", self.lr, 1e-12, 100.0)
        check_choice("lr_suggest", self.lr_suggest, LR_SUGGESTIONS)
        check_choice("frozen_bn", self.frozen_bn, FROZEN_BN)
        check_range("wd", self.wd, 0.0, 10.0)
        check_range("freeze_epochs", self.freeze_epochs, 0, 100000)
        check_range("lr_mult", self.lr_mult, 1.0, 1e6)
        check_range("unfreeze_every", self.unfreeze_every, 1, 100000)
        check_range("momentum", self.momentum, 0.0, 0.9999)
        check_range("eps", self.eps, 0.0, 1.0)
        if self.step_size is not None:
            check_range("step_size", self.step_size, 1, 100000)
        check_range("gamma", self.gamma, 1e-6, 1.0)
        check_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        check_range("mixup", self.mixup, 0.0, 100.0)
        check_range("cutmix", self.cutmix, 0.0, 100.0)
        if self.mixup and self.cutmix:
            raise ConfigError("mixup and cutmix are exclusive: set one of them to 0.")
        check_choice("keep", self.keep, KEEP_CHOICES)
        if self.ema is not None:
            check_range("ema", self.ema, 0.5, 0.999999)
        elif "ema" in self.keep:
            raise ConfigError(f"keep={self.keep!r} needs an EMA of the weights: add --ema DECAY (e.g. 0.999).")
        check_choice("monitor", self.monitor, MONITORS)
        check_choice("precision", self.precision, PRECISIONS)
        self.log = ",".join(parse_log_names(self.log))
        if self.early_stop is not None:
            check_range("early_stop", self.early_stop, 1, 100000)
        if self.clip_grad is not None:
            check_range("clip_grad", self.clip_grad, 1e-6, 1e6)
        boost = {"boost_lr": self.boost_lr, "boost_wd": self.boost_wd, "boost_clip": self.boost_clip}
        if self.boost_sensitive is None and any(v is not None for v in boost.values()):
            given = ", ".join(k for k, v in boost.items() if v is not None)
            raise ConfigError(f"{given} set without boost_sensitive: add --boost-sensitive FILE:K (e.g. runs/x:2).")
        if self.boost_sensitive is not None and self.boost_lr is None:
            raise ConfigError("--boost-sensitive needs --boost-lr X, the boosted tensors' own peak LR (e.g. 1e-4).")
        if self.embed_every is not None:
            check_range("embed_every", self.embed_every, 1, 100000)
        if self.boost_lr is not None:
            check_range("boost_lr", self.boost_lr, 1e-12, 100.0)
        if self.boost_wd is not None:
            check_range("boost_wd", self.boost_wd, 0.0, 10.0)
        if self.boost_clip is not None:
            check_range("boost_clip", self.boost_clip, 1e-6, 1e6)


@dataclass
class RunConfig:
    """Where the run folder goes: `out` names it outright, else `<root>/<name>`."""

    name: str | None = None
    root: str = "runs"
    out: str | None = None
    exist_ok: bool = False

    def validate(self) -> None:
        if self.name is not None and ("/" in self.name or self.name in {"", ".", ".."}):
            raise ConfigError(f"run name {self.name!r} must be a plain folder name; use --out for a path.")


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "run": RunConfig}


@dataclass
class Config:
    """A whole command's settings. `Config.from_dict` checks every key and value."""

    command: str = "train"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> Config:
        check_choice("command", self.command, COMMANDS)
        for name in _SECTIONS:
            getattr(self, name).validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        """A TOML-ready dict: None values are left out, `cnn` only for the cnn arch."""
        out = drop_none(dataclasses.asdict(self))
        if self.model.arch != "cnn":
            out["model"].pop("cnn", None)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        return cls().merged(raw)

    def merged(self, overrides: dict[str, Any]) -> Config:
        """A copy with `overrides` (nested like the TOML) applied and validated."""
        config = copy.deepcopy(self)
        _apply(config, overrides, "")
        return config.validate()

    @staticmethod
    def nest(flat: dict[str, Any]) -> dict[str, Any]:
        """Place flat settings (`epochs=3, blocks=4`) in their sections; unknown names are errors."""
        where: dict[str, tuple[str, ...]] = {"command": ()}
        for section, kind in _SECTIONS.items():
            for f in fields(kind):
                if f.name != "cnn":
                    where[f.name] = (section,)
        for f in fields(CnnConfig):
            where[f.name] = ("model", "cnn")
        for f in fields(AugConfig):
            where[f.name] = ("data", "aug")
        where["aug"] = ("data", "aug")  # a flat `aug` names the preset
        for section, old in LEGACY:
            where[old] = (section,)
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            if key not in where:
                raise ConfigError(f"unknown setting {key!r}.{did_you_mean(key, where)}")
            target = nested
            for part in where[key]:
                target = target.setdefault(part, {})
            target["preset" if key == "aug" else key] = value
        return nested

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


def _apply(target: Any, overrides: dict[str, Any], prefix: str) -> None:
    known = {f.name: f for f in fields(target)}
    for (section, old), (new, convert) in LEGACY.items():
        if prefix == f"{section}." and old in overrides:
            if new in overrides:
                raise ConfigError(f"{old} and {new} both given; {new} replaces {old}: keep only {new}.")
            overrides = {k: v for k, v in overrides.items() if k != old} | {new: convert(overrides[old])}
    for key, value in overrides.items():
        where = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown setting {where!r}; valid here: {', '.join(known)}.{did_you_mean(key, known)}")
        current = getattr(target, key)
        if isinstance(current, AugConfig) and isinstance(value, str):
            value = {"preset": value}  # `aug = "standard"`, as configs wrote it before the [data.aug] table
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"setting {where!r} must be a table of settings, not {value!r}.")
            copy = dataclasses.replace(current)
            _apply(copy, value, f"{where}.")
            setattr(target, key, copy)
        else:
            setattr(target, key, coerce(where, value, known[key].type))


def load_config(path: str | Path) -> Config:
    """Read a config TOML (for example a run's own `config.toml`) into a validated `Config`."""
    return Config.from_dict(read_toml(path))


# -- for other settings dataclasses that reuse these sections (fastcls.pretrain) ----------------
def apply_settings(target: Any, overrides: dict[str, Any], prefix: str = "") -> None:
    """Set `overrides` (nested dicts for nested dataclasses) on a settings dataclass, checking each
    key and coercing each value the way `Config.merged` does."""
    _apply(target, overrides, prefix)
