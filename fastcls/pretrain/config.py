"""The settings of a pretraining run: the shared data/model/run sections plus a `pretrain` section.

Written to the run folder as `config.toml` (with `command = "pretrain"`), so `fastcls run
RUN/config.toml` repeats the run and `--resume` continues it with exactly these settings.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from fastcls.config import CnnConfig, DataConfig, ModelConfig, RunConfig, apply_settings, read_toml
from fastcls.errors import ConfigError, did_you_mean

__all__ = ["OPTIMIZERS", "PretrainConfig", "SslConfig", "is_pretrain_config", "load_pretrain_config"]

# Default peak LR of each optimiser for a batch of 256 (scaled linearly with the batch). SGD with
# momentum 0.9 at 0.06 per 128 images is what lightly's benchmarks train BYOL/SimSiam/SimCLR with;
# LARS (lightly's) at 0.2 per 256 is the BYOL paper's; AdamW is torch's.
OPTIMIZERS = {"sgd": 0.12, "lars": 0.2, "adamw": 2e-3}


def _check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    if value < low or (high is not None and value > high):
        upper = f" and {high}" if high is not None else ""
        raise ConfigError(f"{name}={value!r} is out of range: it must be at least {low}{upper}.")


@dataclass
class SslConfig:
    """The self-supervised part: method, budget, optimiser, target momentum and the end-of-run probe.

    `lr` None means the optimiser's default scaled by batch/256. `probe` None means knn when the
    DATA (or `probe_data`) has labels, else none. `min_scale` None is the method's own (lightly's).
    """

    method: str = "byol"
    epochs: int = 10
    lr: float | None = None
    wd: float = 5e-4
    opt: str = "sgd"
    warmup: int = 0  # epochs of linear LR warm-up before the cosine decay
    seed: int = 42
    hidden_dim: int | None = None  # projection/prediction MLP width (None: the method's default)
    target_momentum: float = 0.996  # BYOL: EMA momentum at the start; a cosine schedule takes it to 1
    min_scale: float | None = None  # smallest random-resized-crop area of a view
    hflip: float = 0.5  # probability that a view is mirrored (0 where mirroring changes the meaning: digits, text)
    probe: str | None = None
    probe_data: str | None = None  # labelled DATA to probe on when DATA itself is unlabeled
    knn_k: int = 200  # lightly's KNNClassifier default and InstDisc's monitor (k 200, temperature 0.1)

    def validate(self) -> None:
        from fastcls.pretrain.methods import get_method
        from fastcls.pretrain.probe import check_probe

        get_method(self.method)
        _check_range("epochs", self.epochs, 1, 100000)
        if self.lr is not None:
            _check_range("lr", self.lr, 1e-12, 100.0)
        _check_range("wd", self.wd, 0.0, 10.0)
        if self.opt not in OPTIMIZERS:
            hint = did_you_mean(self.opt, OPTIMIZERS)
            raise ConfigError(f"opt={self.opt!r} is not one of {', '.join(OPTIMIZERS)}.{hint}")
        _check_range("warmup", self.warmup, 0, self.epochs - 1)
        if self.hidden_dim is not None:
            _check_range("hidden_dim", self.hidden_dim, 1, 65536)
        _check_range("target_momentum", self.target_momentum, 0.0, 1.0)
        if self.min_scale is not None:
            _check_range("min_scale", self.min_scale, 0.01, 1.0)
        _check_range("hflip", self.hflip, 0.0, 1.0)
        if self.probe is not None:
            check_probe(self.probe)
        _check_range("knn_k", self.knn_k, 1, 10000)

    def base_lr(self, bs: int) -> float:
        """The peak LR: `lr`, else the optimiser's default for a batch of 256 scaled linearly."""
        return self.lr if self.lr is not None else OPTIMIZERS[self.opt] * bs / 256


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "pretrain": SslConfig, "run": RunConfig}


@dataclass
class PretrainConfig:
    """A whole `fastcls pretrain` run's settings; `merged` checks every key and value."""

    command: str = "pretrain"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: SslConfig = field(default_factory=SslConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> PretrainConfig:
        if self.command != "pretrain":
            raise ConfigError(f'command={self.command!r}: a pretraining config says command = "pretrain".')
        if self.data.bs == "auto":
            raise ConfigError("--bs auto is for classifier training; give pretraining a number (e.g. --bs 256).")
        aug = self.data.aug
        if aug.preset != "none" or any(v is not None for v in aug.overrides().values()):
            raise ConfigError(
                f"aug {aug.preset!r}: pretraining augments with its method's own two views; drop --aug and [data.aug]."
            )
        if self.model.head_dropout is not None:
            raise ConfigError("head_dropout is the classifier's and a backbone has none; set it when fine-tuning.")
        for name in _SECTIONS:
            getattr(self, name).validate()
        return self

    def merged(self, overrides: dict[str, Any]) -> PretrainConfig:
        config = copy.deepcopy(self)
        apply_settings(config, overrides)
        return config.validate()

    @staticmethod
    def nest(flat: dict[str, Any]) -> dict[str, Any]:
        """Place flat settings (`epochs=3, method="byol", blocks=4`) in their sections."""
        where: dict[str, tuple[str, ...]] = {"command": ()}
        for section, kind in _SECTIONS.items():
            for f in fields(kind):
                if f.name != "cnn":
                    where[f.name] = (section,)
        for f in fields(CnnConfig):
            where[f.name] = ("model", "cnn")
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            if key not in where:
                raise ConfigError(f"unknown pretraining setting {key!r}.{did_you_mean(key, where)}")
            target = nested
            for part in where[key]:
                target = target.setdefault(part, {})
            target[key] = value
        return nested

    @classmethod
    def flat_keys(cls) -> frozenset[str]:
        """Every flat setting name `nest` takes (a recipe's `pretrain` step takes these)."""
        names = {f.name for kind in _SECTIONS.values() for f in fields(kind) if f.name != "cnn"}
        return frozenset(names | {f.name for f in fields(CnnConfig)})

    def to_dict(self) -> dict[str, Any]:
        out = _drop_none(dataclasses.asdict(self))
        if self.model.arch != "cnn":
            out["model"].pop("cnn", None)
        return out

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def is_pretrain_config(path: Any) -> bool:
    """True for a TOML file that says `command = "pretrain"` (a pretraining run's config.toml)."""
    import tomllib
    from pathlib import Path

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8")).get("command") == "pretrain"
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False


def load_pretrain_config(path: Any) -> PretrainConfig:
    """A pretraining run's config.toml as a validated PretrainConfig."""
    return PretrainConfig().merged(read_toml(path))
