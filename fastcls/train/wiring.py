"""The Trainer's fastai callbacks, assembled from the settings in one function.

Each callback owns one side effect (metrics.csv, checkpoints, the resume point, the NaN guard, early
stopping, EMA, trackers, progress bars, BatchNorm policy, data-parallel steps); `assemble` builds the
ones the settings ask for and lists them in the order fastai should see them, while each callback's
own `order` attribute decides when it runs within an event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.config import flag
from fastcls.errors import ConfigError
from fastcls.train.batchnorm import FreezeBatchNorm, PreciseBatchNorm, RestartBatchNormStats
from fastcls.train.callbacks import (
    Autocast,
    BoostClip,
    Checkpoints,
    EarlyStop,
    EpochLog,
    NanGuard,
    ProgressBars,
    StopRequest,
)
from fastcls.train.resuming import ResumePoint

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fastcls.config import TrainConfig
    from fastcls.reporting import Reporter

__all__ = ["Callbacks", "assemble"]


@dataclass
class Callbacks:
    """The callbacks by role (the Trainer reads their state), and `all` of them, in order."""

    log: EpochLog
    checkpoints: Checkpoints
    resume_point: ResumePoint
    nan_guard: NanGuard
    stop: StopRequest
    early: EarlyStop | None = None
    restart: RestartBatchNormStats | None = None
    precise: PreciseBatchNorm | None = None
    ema: Any = None
    trackers: list[Any] = field(default_factory=list)
    together: list[Any] = field(default_factory=list)  # a data-parallel run's
    progress: ProgressBars | None = None
    all: list[Any] = field(default_factory=list)


def assemble(
    settings: TrainConfig,
    model: nn.Module,
    history: list[dict[str, Any]],
    metrics_path: Path | None,
    generator: torch.Generator,
    *,
    pretrained: bool,
    stop_after: int | None,
    run_config: dict[str, Any],
    boosted_tensors: list[str],
    device: torch.device,
    score: Callable[[nn.Module], dict[str, float]],
    reporter: Reporter,
    total_epochs: int,
    extra: list[Any],
    world: Any = None,
) -> Callbacks:
    """Every callback `settings` asks for. `score` scores a model on the valid split (for EMA);
    `extra` are the run's own (embedding snapshots); `world` (fastcls.train.distributed) a
    data-parallel run's processes."""
    from fastcls.train.tracking import trackers

    log = EpochLog(history, metrics_path)
    folder = metrics_path.parent / "checkpoints" if metrics_path is not None else None
    checkpoints = Checkpoints(history, folder, model, settings.monitor)
    # eval and restart re-estimate a pretrained model's statistics when its BatchNorm first trains
    # (README, "BatchNorm"); PreciseBatchNorm does that at every epoch's end, so the restart is only
    # needed without it
    restarts = pretrained and settings.frozen_bn in ("eval", "restart") and settings.precise_bn == 0
    restart = RestartBatchNormStats() if restarts else None
    made = Callbacks(
        log=log,
        checkpoints=checkpoints,
        resume_point=ResumePoint(history, folder, generator, restart),
        nan_guard=NanGuard(history),
        stop=StopRequest(history, stop_after),
        early=EarlyStop(settings.monitor, settings.early_stop, history) if settings.early_stop else None,
        restart=restart,
    )
    made.all = [
        made.log,
        made.checkpoints,
        made.resume_point,
        made.nan_guard,
        made.stop,
        *_regularisers(settings),
        *_precision(settings, device),
    ]
    run_folder = metrics_path.parent if metrics_path is not None else None
    made.trackers = trackers(settings.log, history, run_folder, run_config)
    if settings.ema:
        from fastcls.train.ema import EmaWeights

        made.ema = EmaWeights(model, settings.ema, score, log.pending)
        checkpoints.ema, made.resume_point.ema = made.ema.module, made.ema
        made.all.append(made.ema)
    made.all += made.trackers + extra
    if made.early is not None:
        made.all.append(made.early)
    if settings.frozen_bn == "eval":
        made.all.append(FreezeBatchNorm())
    if boosted_tensors and settings.boost_clip:
        lookup = dict(model.named_parameters())
        made.all.append(BoostClip([lookup[name] for name in boosted_tensors], settings.boost_clip))
    if restart is not None:
        made.all.append(restart)
    if settings.precise_bn != 0:
        made.precise = PreciseBatchNorm(settings.precise_bn, history, made.ema.module if made.ema else None)
        made.all.append(made.precise)
    made.together = _together(made, world, history, generator)
    made.all += made.together
    if reporter.mode != "quiet":
        made.progress = ProgressBars(reporter, history, total_epochs)
        made.all.append(made.progress)
    return made


def _precision(settings: TrainConfig, device: torch.device) -> list[Any]:
    """fp16: fastai's MixedPrecision with a grad scaler, GPU only; bf16: autocast on any device."""
    if settings.precision == "fp16":
        if device.type != "cuda":
            raise ConfigError(
                f"{flag('precision')} fp16 needs a CUDA GPU; on the CPU use {flag('precision')} bf16 or fp32."
            )
        from fastai.callback.fp16 import MixedPrecision

        return [MixedPrecision("fp16")]
    if settings.precision == "bf16":
        return [Autocast(device.type)]
    return []


def _regularisers(settings: TrainConfig) -> list[Any]:
    """fastai's own MixUp, CutMix and GradientClip callbacks, as the settings ask (imported only then:
    fastai.callback.mixup pulls in fastai.basics and pandas, a second of start-up)."""
    callbacks: list[Any] = []
    if settings.mixup or settings.cutmix:
        from fastai.callback.mixup import CutMix, MixUp

        callbacks.append(MixUp(settings.mixup) if settings.mixup else CutMix(settings.cutmix))
    if settings.clip_grad:
        from fastai.callback.training import GradientClip

        callbacks.append(GradientClip(settings.clip_grad))
    return callbacks


def _together(made: Callbacks, world: Any, history: list[dict[str, Any]], generator: torch.Generator) -> list[Any]:
    """Data-parallel: DDP for the training batches, stops agreed by every rank, metrics and resume state
    gathered from every rank."""
    if world is None:
        return []
    from fastcls.train.parallel_callbacks import DataParallel, StepTogether
    from fastcls.train.resume import capture_rng

    made.stop.collective = True
    made.log.reduce = world.add_up
    made.resume_point.share = world.resume_share(lambda: capture_rng(generator))
    return [DataParallel(world), StepTogether(world, history, made.nan_guard, made.stop)]
