"""Build a fastai Learner over in-memory batches and train it phase by phase.

AdamW is torch's own (through fastai's OptimWrapper), which keeps the per-step cost equal to a
hand-written loop; fastai supplies the one-cycle schedule, freezing by layer group, per-group
learning rates and the callback system.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcls.config import TrainConfig, flag
from fastcls.data.batching import Loader
from fastcls.errors import TrainingDiverged
from fastcls.models.groups import layer_groups, param_groups
from fastcls.models.heads import HeadOnly, HeadSplit, head_split
from fastcls.reporting import Reporter
from fastcls.train.features import FeatureBatches, compute_features, stochastic_layers
from fastcls.train.lr_finding import LRFindResult, suggest_lrs
from fastcls.train.optim import no_decay_params, opt_func, schedule
from fastcls.train.strategies import Phase, group_lrs, plan
from fastcls.train.wiring import assemble

__all__ = ["LRFindResult", "Resume", "Trainer", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch RNGs, so a CPU run repeats exactly for a fixed seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _import_fastai():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation noise inside fastai
        from fastai.data.core import DataLoaders
        from fastai.learner import Learner
    return Learner, DataLoaders


@dataclass
class Resume:
    """An interrupted run to continue: its resume state, metrics rows and checkpoints."""

    state: dict[str, Any]
    history: list[dict[str, Any]]
    checkpoints: dict[str, dict[str, torch.Tensor]]
    checkpoint_epochs: dict[str, int]


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _check_tensor_names(model: nn.Module, names: list[str]) -> None:
    from fastcls.errors import ConfigError
    from fastcls.train.sensitive import check_sensitive_names

    check_sensitive_names(names, (name for name, _ in model.named_parameters()))
    both = {name for name in names if names.count(name) > 1}
    if both:
        raise ConfigError(f"tensors {', '.join(sorted(both))} are both frozen and boosted; choose one per tensor.")


class CrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy that tells fastai's MixUp/CutMix the targets are class indices, so they mix
    the two losses (soft targets) while accuracy is still computed on the hard labels."""

    y_int = True


class Trainer:
    """One model, its data and its strategy: `lr_find()` and `fit()` share the same Learner.

    Phases come from `strategies.plan`; between phases the Learner is re-frozen and the next
    one-cycle starts with per-group learning rates.
    """

    def __init__(
        self,
        model: nn.Module,
        train: Loader,
        valid: Loader,
        settings: TrainConfig,
        reporter: Reporter,
        metrics_path: Path | None = None,
        pretrained: bool = False,
        stop_after: int | None = None,
        run_config: dict[str, Any] | None = None,
        frozen_tensors: list[str] | None = None,
        boosted_tensors: list[str] | None = None,
        extra_callbacks: list[Any] | None = None,
        class_weights: torch.Tensor | None = None,
        world: Any = None,
    ) -> None:
        from fastcls.train.callbacks import ProgressBars

        Learner, DataLoaders = _import_fastai()
        self.model, self.train, self.valid, self.settings, self.reporter = model, train, valid, settings, reporter
        self.frozen_tensors, self.boosted_tensors = list(frozen_tensors or []), list(boosted_tensors or [])
        _check_tensor_names(model, self.frozen_tensors + self.boosted_tensors)
        for name, param in model.named_parameters():
            if name in self.frozen_tensors:
                param.requires_grad_(False)  # and left out of the optimiser, so no phase unfreezes it
        self.groups = [g.name for g in layer_groups(model)]
        self.phases = plan(settings, len(self.groups))
        if not any(p.frozen or p.spread for p in self.phases):
            # One LR for everything: a single optimiser group keeps the per-batch cost of a hand loop
            # (fastai sets and reads every group's hyper-parameters on every batch).
            self.groups = ["all"]
            self.phases = plan(settings, 1)
        self.layer_group_count = len(self.groups)
        if self.boosted_tensors:
            self.groups.append("boosted")  # last, so freezing the leading layer groups never freezes it
        self.history: list[dict[str, Any]] = []
        self.device = next(model.parameters()).device
        self.bn_policy = settings.frozen_bn
        self.start_epoch, self._resume_state, self.world = 0, None, world
        wired = assemble(
            settings,
            model,
            self.history,
            metrics_path,
            train.generator,
            pretrained=pretrained,
            stop_after=stop_after,
            run_config=run_config or {},
            boosted_tensors=self.boosted_tensors,
            device=self.device,
            score=self._score,
            reporter=reporter,
            total_epochs=sum(p.epochs for p in self.phases),
            extra=list(extra_callbacks or []),
            world=world,
        )
        self.log, self.checkpoints, self.resume_point, self.stop = (
            wired.log,
            wired.checkpoints,
            wired.resume_point,
            wired.stop,
        )
        self.nan_guard, self.early, self.restart, self.ema = wired.nan_guard, wired.early, wired.restart, wired.ema
        self.precise = wired.precise
        self.trackers, self.together, self.progress = wired.trackers, wired.together, wired.progress
        self.learn = Learner(
            DataLoaders(train, valid),
            model,
            loss_func=CrossEntropy(  # class weights: --balance loss
                weight=class_weights.to(self.device) if class_weights is not None else None,
                label_smoothing=settings.label_smoothing,
            ),
            opt_func=opt_func(settings, no_decay_params(model)),
            splitter=self._split,
            train_bn=self.bn_policy != "eval",
            cbs=wired.all,
        )
        self.log.head_index = self.layer_group_count - 1
        for name in ("progress", "ProgressCallback"):
            if hasattr(self.learn, name) and not isinstance(getattr(self.learn, name), ProgressBars):
                self.learn.remove_cb(getattr(self.learn, name))

    def set_lr(self, lr: float) -> None:
        """Use a new base LR (e.g. the LR finder's pick) for every phase."""
        self.settings.lr = lr
        self.phases = plan(self.settings, len(self.groups))

    def _split(self, model: nn.Module) -> list[list[nn.Parameter]]:
        """fastai's splitter: the layer groups (or one group), without the frozen sensitive tensors,
        and the boosted tensors moved into a last group of their own."""
        names = {id(p): n for n, p in model.named_parameters()}
        moved = set(self.frozen_tensors) | set(self.boosted_tensors)
        groups = param_groups(model) if self.layer_group_count > 1 else [list(model.parameters())]
        keep = [[p for p in group if names[id(p)] not in moved] for group in groups]
        if self.boosted_tensors:
            lookup = dict(model.named_parameters())
            keep.append([lookup[name] for name in self.boosted_tensors])
        return keep

    def _enter(self, phase: Phase) -> list[float]:
        self.learn.freeze_to(phase.frozen)
        lrs = group_lrs(phase, self.layer_group_count, self.settings.lr_mult)
        return lrs + ([self.settings.boost_lr] if self.boosted_tensors else [])

    def _wd(self) -> float | list[float]:
        if not self.boosted_tensors:
            return self.settings.wd
        boost_wd = self.settings.boost_wd if self.settings.boost_wd is not None else self.settings.wd
        return [self.settings.wd] * self.layer_group_count + [boost_wd]

    @property
    def planned_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def restore(self, resume: Resume) -> None:
        """Continue an interrupted run: its metrics rows, checkpoints, early-stop and BatchNorm-restart
        state now; optimiser, grad scaler and RNG states when `fit` reaches the epoch it stopped at."""
        from fastcls.errors import ConfigError

        done = int(resume.state["epoch"])
        if len(resume.history) != done or "last" not in resume.checkpoints:
            raise ConfigError(f"the resume state is at epoch {done} but metrics.csv has {len(resume.history)} rows.")
        stop_after = self.stop.stop_after
        if stop_after is not None and stop_after <= done:
            raise ConfigError(f"--stop-after {stop_after} is not after epoch {done}, where this run stopped.")
        self.history[:] = resume.history
        if self.log.path is not None:
            from fastcls.runs import write_metrics

            write_metrics(self.log.path, self.history)
        for name, state in resume.checkpoints.items():
            self.checkpoints.states[name] = state
            self.checkpoints.epochs[name] = resume.checkpoint_epochs[name]
            self.checkpoints.write(name)
        if self.early is not None:
            for row in self.history:
                self.early.update(row[self.settings.monitor])
        if self.restart is not None:
            self.restart.pending = bool(resume.state["restart_pending"])
        self.model.load_state_dict(resume.checkpoints["last"])
        if self.ema is not None:
            if "ema" not in resume.checkpoints:
                raise ConfigError(f"this run has {flag('ema')} but no ema checkpoint to continue the average from.")
            self.ema.restore(resume.checkpoints["ema"], int(resume.state.get("ema_steps", 0)))
        self.start_epoch, self._resume_state = done, resume.state

    def _continue(self, done_in_phase: int) -> list[Any]:
        """Load the saved optimiser, scaler and RNG states just before the first resumed epoch.

        At a phase boundary the optimiser state is not loaded: entering a phase clears it, as in
        the uninterrupted run (fastai's freeze_to)."""
        from fastai.optimizer import Optimizer

        from fastcls.train.resume import restore_rng
        from fastcls.train.resuming import ScalerState

        state, self._resume_state = self._resume_state, None
        if state is None:
            return []
        if done_in_phase > 0:
            optimizer = state["optimizer"]
            if isinstance(self.learn.opt, Optimizer):  # fastai's own (Lamb, Ranger) keep state as given
                optimizer = _to_device(optimizer, self.device)
            self.learn.opt.load_state_dict(optimizer)
        rng = state.get("rank_rng", [state["rng"]])[self.world.rank] if self.world is not None else state["rng"]
        restore_rng(rng, self.train.generator)
        return [ScalerState(state["scaler"])] if state.get("scaler") and done_in_phase > 0 else []

    def _score(self, model: nn.Module) -> dict[str, float]:
        """Valid loss, accuracy and top-5 of `model` (e.g. the EMA), on cached features in a head-only phase."""
        from fastcls.train.ema import score

        if isinstance(self.learn.model, HeadOnly):  # the backbone is frozen: the average's equals the model's
            split = head_split(model, layer_groups(model)[-1].params)
            model = HeadOnly(split.head, split.dropout)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.settings.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            scores = score(model, self.learn.dls.valid, self.learn.loss_func)
        return scores if self.world is None else self.world.mean(scores, self.learn.dls.valid.n)

    def _cacheable(self, phase: Phase) -> HeadSplit | None:
        """The head to train alone on cached features in `phase`, or None (see train/features.py)."""
        s = self.settings
        if self.layer_group_count < 2 or phase.frozen != self.layer_group_count - 1 or self.boosted_tensors:
            return None
        if not s.cache_features or self.bn_policy != "eval" or s.mixup or s.cutmix:
            return None
        if getattr(self.train, "augment", None) is not None or not hasattr(self.train, "in_order"):
            return None
        split = head_split(self.model, layer_groups(self.model)[-1].params)
        if split is None or stochastic_layers(self.model, split.head):
            return None
        return split

    @contextlib.contextmanager
    def _head_only(self, phase: Phase) -> Iterator[None]:
        """While `phase` runs, the Learner trains the head alone on features computed once, when it can."""
        from fastcls.data.loaders import memory_budget

        split = self._cacheable(phase)
        cached = None
        if split is not None:
            limit = memory_budget() / 2
            train = compute_features(self.model, split, self.train, self.settings.precision, limit)
            valid = compute_features(self.model, split, self.valid, self.settings.precision, limit)
            cached = (train, valid) if train is not None and valid is not None else None
        if cached is None:
            yield
            return
        (train_z, train_y, train_s), (valid_z, valid_y, valid_s) = cached
        self.reporter.info(
            f"phase {phase.name}: the frozen backbone ran once over {len(train_y)} train and {len(valid_y)} valid "
            f"images ({train_s + valid_s:.1f}s); its epochs train only the head on those features"
        )
        _, DataLoaders = _import_fastai()
        saved = self.learn.model, self.learn.dls
        self.learn.model = HeadOnly(split.head, split.dropout)
        self.learn.dls = DataLoaders(
            FeatureBatches(train_z, train_y, self.train), FeatureBatches(valid_z, valid_y, self.valid)
        )
        try:
            yield
        finally:
            self.learn.model, self.learn.dls = saved

    def fit(self) -> list[dict[str, Any]]:
        """Run every phase (from `start_epoch` when resuming); one metrics row per epoch.

        Stops early for early stopping, a NaN loss, `stop_after`, or SIGINT/SIGTERM (after the
        current batch); `stop.reason` says which of the last two happened.
        """
        from fastcls.train.callbacks import PhaseSchedule

        skip = self.start_epoch
        with self.stop.signals(), contextlib.ExitStack() as stack:
            for tracker in self.trackers:
                stack.callback(tracker.close)
            for phase in self.phases:
                if self.early is not None and self.early.stopped:
                    break  # resumed after the epoch that stopped it early
                if skip >= phase.epochs:
                    skip -= phase.epochs
                    continue
                lrs = self._enter(phase)
                extra = self._continue(skip)
                self.log.phase = phase.name
                scheds = schedule(self.settings, phase.epochs, lrs, phase.pct_start, phase.div)
                n = len(self.train)
                sched = PhaseSchedule(scheds, total=phase.epochs * n, done=skip * n)
                with self.learn.no_logging(), self._head_only(phase):
                    self.learn.fit(phase.epochs - skip, lr=lrs, wd=self._wd(), cbs=[sched, *extra])
                skip = 0
                if self.nan_guard.message or self.stop.reason or (self.early is not None and self.early.stopped):
                    break
        if self.stop.reason and "last" not in self.checkpoints.states:
            from fastcls.errors import Interrupted

            raise Interrupted(f"{self.stop.reason} during epoch 1, before any epoch finished; nothing was saved.")
        if self.nan_guard.message:
            if "last" not in self.checkpoints.states:
                raise TrainingDiverged(
                    f"{self.nan_guard.message}, before any epoch finished; nothing was saved. "
                    f"Lower {flag('lr')} (try `{flag('lr')} auto`) or add {flag('clip_grad')} 1."
                )
            self.settings.keep = "last"  # the last finished epoch is the last good one
        self.model.load_state_dict(self.checkpoints.states[self.settings.keep])
        self.model.eval()
        return self.history

    def lr_find(
        self, suggest: str = "valley", start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100
    ) -> LRFindResult:
        """fastai's LR range test on the first phase's frozen state, leaving no trace.

        Weights, BatchNorm statistics, optimiser, frozen flags and every RNG (including the
        batch order) are restored afterwards, so the next fit is the one you would have had.
        """
        from fastcls.train.callbacks import LRSweep

        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        flags = [p.requires_grad for p in self.model.parameters()]
        rng = (
            torch.get_rng_state(),
            random.getstate(),
            np.random.get_state(),
            self.train.generator.get_state(),
        )
        was_training = self.model.training
        try:
            self._enter(self.phases[0])
            n_epoch = num_it // max(len(self.train), 1) + 1
            # the probe's steps are no training: nothing is logged, checkpointed, averaged into the EMA or
            # agreed between ranks (each rank probes on its own; the caller shares rank 0's pick)
            probe_free = (self.log, self.progress, self.restart, self.precise, self.checkpoints, self.early)
            probe_free += (self.resume_point,)
            quiet = [cb for cb in (*probe_free, self.ema, *self.together) if cb is not None]
            with self.learn.removed_cbs(quiet), self.learn.no_logging():
                self.learn.fit(n_epoch, cbs=LRSweep(start_lr, end_lr, num_it))
            return suggest_lrs(self.learn.recorder, num_it, suggest)
        finally:
            self.model.load_state_dict(saved)
            for p, flag in zip(self.model.parameters(), flags, strict=True):
                p.requires_grad_(flag)
            torch.set_rng_state(rng[0])
            random.setstate(rng[1])
            np.random.set_state(rng[2])
            self.train.generator.set_state(rng[3])
            self.learn.opt = None
            self.model.train(was_training)
