"""The `[train]` section: the optimisation budget, the fine-tuning strategy and what a run keeps, each
setting declared once with its default, check and flag (fastcls.flags)."""

from __future__ import annotations

from dataclasses import dataclass

from fastcls.errors import ConfigError
from fastcls.flags import FINETUNE, SCALE_OUT, TRAIN, field_flag, setting
from fastcls.setting_values import check_choice, check_range

__all__ = ["LOGGERS", "LR_SUGGESTIONS", "TrainConfig", "parse_log_names"]

KEEP_CHOICES = ("last", "best-accuracy", "best-valid_loss", "ema", "best-ema")
MONITORS = ("valid_loss", "accuracy")
PRECISIONS = ("fp32", "bf16", "fp16")
LOGGERS = ("csv", "tensorboard", "wandb")  # fastcls.train.tracking.TRACKERS, checked here without importing fastai
LR_SUGGESTIONS = ("valley", "steep", "minimum", "slide")
FROZEN_BN = ("eval", "train", "restart")


def parse_log_names(value: str) -> list[str]:
    """`csv`, `tensorboard`, `csv,wandb`, ... -> the tracker names; unknown names are a ConfigError."""
    names = [part.strip() for part in str(value).split(",") if part.strip()] or ["csv"]
    for name in names:
        check_choice("log", name, LOGGERS)
    return names


@dataclass
class TrainConfig:
    """The optimisation budget and strategy: one-cycle AdamW over layer groups.

    `lr` None means the default for the job: 3e-3 from scratch, 2e-3 for a pretrained model
    (fastai's fine_tune). `strategy` None means `full` from scratch, `freeze-unfreeze` pretrained.
    With `lr_find` (the command line's `--lr auto`), the LR finder picks `lr` by `lr_suggest`; the pick
    is what config.toml records.
    """

    strategy: str | None = setting(
        None, FINETUNE, help="full, head, freeze-to:K, freeze-unfreeze (default) or progressive."
    )
    freeze_epochs: int = setting(1, FINETUNE, help="freeze-unfreeze: epochs with only the head training (default 1).")
    lr_mult: float = setting(  # measured best on the fine-tune benchmark (README); fastai uses 100
        1.0,
        FINETUNE,
        help="Per-group LRs run geometrically from lr/lr-mult (first group) to lr (head) "
        "(default 1: one LR, measured best in the README; fastai uses 100).",
    )
    unfreeze_every: int = setting(1, FINETUNE, help="progressive: unfreeze one more group every K epochs (default 1).")
    frozen_bn: str = setting(
        "eval",
        FINETUNE,
        help="BatchNorm in frozen layer groups: eval (default: statistics and scale fixed, as Keras and a "
        "hand-written loop do; measured best, see README), train (fastai's train_bn: their scale and shift train "
        "and their statistics follow your batches) or restart (train, with the statistics re-estimated on your "
        "data in the first epoch; the same as train unless --precise-bn 0).",
    )
    cache_features: bool = setting(
        True,
        FINETUNE,
        "--cache-features/--no-cache-features",
        help="When only the head trains (frozen backbone in eval mode, no augmentation), run the backbone once "
        "and train the head on its features (default on).",
    )
    freeze_sensitive: str | None = setting(
        None,
        FINETUNE,
        help="FILE:K: the K most sensitive tensors of a sensitivity.csv (or a run folder holding one) never train.",
    )
    boost_sensitive: str | None = setting(
        None,
        FINETUNE,
        help="FILE:K: the K most sensitive tensors train in their own optimiser group (--boost-lr, --boost-wd).",
    )
    boost_lr: float | None = setting(
        None, FINETUNE, help="Peak LR of the boosted tensors (needed with --boost-sensitive)."
    )
    boost_wd: float | None = setting(None, FINETUNE, help="Weight decay of the boosted tensors (default: --wd).")
    boost_clip: float | None = setting(None, FINETUNE, help="Clip the boosted tensors' gradient norm to this.")
    epochs: int = setting(5, TRAIN, help="Training epochs (default 5; after --freeze-epochs).")
    lr: float | None = setting(
        None,
        TRAIN,
        parse_as=str,
        help="Peak learning rate, or 'auto' to run the LR finder first (default 3e-3 from scratch, 2e-3 fine-tuning).",
    )
    lr_find: bool = False
    lr_suggest: str = setting(
        "valley", TRAIN, help="Which LR finder suggestion --lr auto takes: valley, steep, minimum, slide."
    )
    seed: int = setting(42, TRAIN, help="Seed for the split, initialisation and shuffling (default 42).")
    wd: float = setting(0.01, TRAIN, help="AdamW weight decay (default 0.01).")
    opt: str = setting("adamw", TRAIN, help="Optimiser: adamw (default), adam, sgd, lamb or ranger.")
    sched: str = setting(
        "one-cycle", TRAIN, help="LR schedule in each phase: one-cycle (default), cosine, flat-cos or step."
    )
    momentum: float = setting(  # one-cycle schedules beta1 for Adam*
        0.9, TRAIN, help="SGD momentum, or beta1 of lamb/ranger (default 0.9)."
    )
    eps: float = setting(1e-8, TRAIN, help="Optimiser epsilon (default 1e-8).")
    step_size: int | None = setting(None, TRAIN, help="step schedule: epochs between LR drops (default a third).")
    gamma: float = setting(0.1, TRAIN, help="step schedule: LR factor at each drop (default 0.1).")
    label_smoothing: float = setting(0.0, TRAIN, help="Label smoothing of the cross-entropy (default 0).")
    mixup: float = setting(0.0, TRAIN, help="MixUp with Beta(A, A), e.g. 0.4 (default off).")
    cutmix: float = setting(0.0, TRAIN, help="CutMix with Beta(A, A), e.g. 1.0 (default off).")
    clip_grad: float | None = setting(None, TRAIN, help="Clip the gradient norm to N (default off).")
    precise_bn: int | None = setting(
        None,
        TRAIN,
        help="After every training epoch, recompute the running statistics of the BatchNorm layers that "
        "trained from up to N batches of un-augmented training images with the epoch's final weights "
        "(PreciseBN), so validation and the saved model use statistics of the weights they hold; 0 keeps the "
        "running averages (default: 200 batches, and at most a quarter of an epoch's).",
    )
    keep: str = setting(
        "last",
        TRAIN,
        help="Checkpoint saved as the model: last (default), best-accuracy, best-valid_loss, or with --ema: ema, "
        "best-ema.",
    )
    ema: float | None = setting(
        None,
        TRAIN,
        help="Keep an exponential moving average of the weights with this decay (e.g. 0.999; timm's ModelEmaV3 "
        "with warmup), scored every epoch; --keep ema ships it (default off).",
    )
    early_stop: int | None = setting(None, TRAIN, help="Stop after P epochs without improvement (default off).")
    monitor: str = setting("valid_loss", TRAIN, help="What --early-stop watches: valid_loss (default) or accuracy.")
    precision: str = setting(
        "fp32", TRAIN, help="fp32 (default), bf16 (autocast, CPU or GPU) or fp16 (GPU, with a grad scaler)."
    )
    channels_last: bool = setting(
        False, TRAIN, "--channels-last/--no-channels-last", help="Channels-last memory format (default off)."
    )
    compile: bool = setting(
        False,
        TRAIN,
        "--compile/--no-compile",
        help="torch.compile the model (slow first epoch, faster after; needs a C++ compiler on the CPU).",
    )
    log: str = setting(
        "csv",
        TRAIN,
        help="Trackers, comma-separated: csv (metrics.csv, always written), tensorboard (RUN/tensorboard), "
        "wandb (RUN/wandb, offline unless WANDB_MODE or WANDB_API_KEY is set). Default csv.",
    )
    embed_every: int | None = setting(
        None,
        TRAIN,
        min=1,
        help="Save the valid split's penultimate features every K epochs, for `fastcls interpret` (pca_epochs).",
    )
    sync_bn: bool = setting(
        False,
        SCALE_OUT,
        "--sync-bn/--no-sync-bn",
        help="Under torchrun on GPUs: BatchNorm uses the statistics of the whole global batch (SyncBatchNorm); "
        "default off: each process normalises by its own share.",
    )

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
        if self.precise_bn is not None:
            check_range("precise_bn", self.precise_bn, 0, 1000000)
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
            raise ConfigError(
                f"keep={self.keep!r} needs an EMA of the weights: add {self._flag('ema')} DECAY (e.g. 0.999)."
            )
        check_choice("monitor", self.monitor, MONITORS)
        check_choice("precision", self.precision, PRECISIONS)
        self.log = ",".join(parse_log_names(self.log))
        if self.early_stop is not None:
            check_range("early_stop", self.early_stop, 1, 100000)
        if self.clip_grad is not None:
            check_range("clip_grad", self.clip_grad, 1e-6, 1e6)
        self._validate_boost()
        if self.embed_every is not None:
            check_range("embed_every", self.embed_every, 1, 100000)

    def _flag(self, name: str) -> str:
        return field_flag(type(self), name)

    def _validate_boost(self) -> None:
        boost = {"boost_lr": self.boost_lr, "boost_wd": self.boost_wd, "boost_clip": self.boost_clip}
        if self.boost_sensitive is None and any(v is not None for v in boost.values()):
            given = ", ".join(k for k, v in boost.items() if v is not None)
            raise ConfigError(
                f"{given} set without boost_sensitive: add {self._flag('boost_sensitive')} FILE:K (e.g. runs/x:2)."
            )
        if self.boost_sensitive is not None and self.boost_lr is None:
            raise ConfigError(
                f"{self._flag('boost_sensitive')} needs {self._flag('boost_lr')} X, the boosted tensors' own peak LR "
                "(e.g. 1e-4)."
            )
        if self.boost_lr is not None:
            check_range("boost_lr", self.boost_lr, 1e-12, 100.0)
        if self.boost_wd is not None:
            check_range("boost_wd", self.boost_wd, 0.0, 10.0)
        if self.boost_clip is not None:
            check_range("boost_clip", self.boost_clip, 1e-6, 1e6)
