"""Data-parallel training with torch.distributed: `torchrun --nproc-per-node N -m fastcls train ...`.

Any launcher that sets RANK, WORLD_SIZE and LOCAL_RANK (torchrun, `python -m torch.distributed.run`,
Slurm scripts that export them) makes `current_world()` join the process group: NCCL when the
processes train on CUDA GPUs (one per process, by LOCAL_RANK), gloo on the CPU.

What each process does (the rest of fastcls asks this module):
- data: every rank draws the same seeded order; rank r trains on its slice of each global batch
  (`fastcls.data.shards`), so the effective batch is `--bs` x processes (or `--bs` split evenly
  with `--global-bs`); validation files are split into contiguous shares, each decoded by one rank;
- gradients: torch's DistributedDataParallel all-reduces them (`DataParallel`, wrapping the model
  for training batches only: validation runs the plain module, so unequal shares never wait);
- metrics: EpochLog's per-epoch sums (and the EMA's scores) are gathered and added in rank order,
  so every rank holds the same numbers, those of the whole data set;
- decisions: a NaN/inf loss or a signal on any rank stops every rank at the same batch
  (`StepTogether`); early stop and --stop-after follow from those identical numbers; setup errors
  are gathered (`World.together`) and rank 0's decisions shared (`World.from_leader`), so a failure
  on one rank ends all with one message, printed by rank 0 (the others are `silent`);
- files: rank 0 alone opens the staging folder and writes the run, checkpoints, resume.pt (with
  every rank's RNG states), trackers, plots and progress; the other ranks print nothing but errors.

Why not fastai's DistributedTrainer: it needs Accelerate, and its DistributedDL wraps fastai
DataLoaders only (fastcls's in-memory `Batches` have no `dataset`/`get_idxs`), broadcasts each
epoch's indices as CUDA tensors (no gloo on the CPU), gives each rank a contiguous half of the
epoch rather than a slice of every global batch, and pads validation by repeating images, which
changes the valid loss fastcls reports.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from fastcls.config import flag
from fastcls.data.shards import Shard
from fastcls.errors import ConfigError, DataError, FastclsError, RunError
from fastcls.reporting import Reporter

__all__ = [
    "RankFailed",
    "World",
    "check_world_size",
    "current_world",
    "launched",
    "refuse_mpi",
    "silent_reporter",
    "sync_batchnorm",
    "wait_for_leader",
]

T = TypeVar("T")
_MPI_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")  # Open MPI, MPICH/Intel MPI, MVAPICH
_WORLD: list[World | None] = []  # filled on first use: [] not yet looked at, [None] not distributed


class RankFailed(FastclsError):
    """Another process of the distributed run failed; its reason is in the message."""


def launched() -> bool:
    """Whether a distributed launcher started this process (torchrun sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def silent_reporter() -> Reporter:
    """What ranks other than 0 report through: nothing, not even warnings (rank 0 shows them)."""

    class Silent(Reporter):
        def warn(self, message: str) -> None:
            pass

    return Silent("quiet")


@dataclass(frozen=True)
class World:
    """This process's place in a distributed run and the few collectives fastcls needs."""

    rank: int
    size: int
    local_rank: int
    backend: str
    device: torch.device  # where this rank trains, and where NCCL's collectives run
    control: Any = None  # a gloo group with a long timeout, for the exchanges that wait on one rank (rank 0 writing)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.size)

    # -- collectives ------------------------------------------------------------------------
    def gather(self, values: Sequence[float]) -> torch.Tensor:
        """Every rank's `values` as a (size, len) float64 tensor on the CPU, identical on all ranks."""
        mine = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device)
        rows = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(rows, mine)
        return torch.stack(rows).cpu()

    def objects(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable), in rank order."""
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value, group=self.control)
        return out

    def total(self, value: float) -> float:
        return float(self.gather([value]).sum())

    def add_up(self, sums: dict[str, float]) -> dict[str, float]:
        """Per-rank sums and counts (EpochLog's) added over ranks in rank order: the same on every rank."""
        keys = list(sums)
        totals = self.gather([sums[k] for k in keys]).sum(dim=0).tolist()
        return {k: round(v) if isinstance(sums[k], int) else v for k, v in zip(keys, totals, strict=True)}

    def mean(self, scores: dict[str, float], n: int) -> dict[str, float]:
        """Means over this rank's `n` images (e.g. the EMA's valid scores) -> means over every rank's."""
        keys = list(scores)
        totals = self.gather([n, *(scores[k] * n for k in keys)]).sum(dim=0).tolist()
        count = max(totals[0], 1.0)
        return {k: v / count for k, v in zip(keys, totals[1:], strict=True)}

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    # -- decisions made together ------------------------------------------------------------
    def from_leader(self, make: Callable[[], T]) -> T:
        """Rank 0 runs `make()`; every rank gets its result (picklable), or raises its error (rank 0
        its own exception, the others a copy). The other ranks wait meanwhile."""
        box: list[Any] = [None]
        failure: BaseException | None = None
        if self.leader:
            try:
                box = [("ok", make())]
            except Exception as exc:
                failure, box = exc, [("error", _portable(exc, 0, self.size))]
        dist.broadcast_object_list(box, src=0, group=self.control)
        if failure is not None:
            raise failure
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def together(self, work: Callable[[], T]) -> T:
        """Every rank runs `work()`; when it failed on any rank, every rank raises the first failed
        rank's error (that rank its own exception), so none is left waiting for the others."""
        failure: Exception | None = None
        result: Any = None
        try:
            result = work()
        except Exception as exc:
            failure = exc
        errors = self.objects(None if failure is None else _portable(failure, self.rank, self.size))
        first = next((rank for rank, error in enumerate(errors) if error is not None), None)
        if first is None:
            return result
        if first == self.rank and failure is not None:
            raise failure
        raise errors[first]

    @contextmanager
    def errors_once(self) -> Iterator[None]:
        """Errors all ranks raise together are printed by rank 0 alone (`silent` elsewhere); losing
        contact with another rank (it crashed, or was killed) becomes one clear error."""
        try:
            yield
        except FastclsError as exc:
            if not self.leader:
                exc.silent = True  # type: ignore[attr-defined]  # read by fastcls.cli.common.handled
            raise
        except (dist.DistError, RuntimeError) as exc:
            if not isinstance(exc, dist.DistError) and not any(name in str(exc) for name in ("gloo", "NCCL")):
                raise  # not the process group's: a bug, with its traceback
            error = RankFailed(
                f"lost contact with another process of this distributed run ({_backend_reason(exc)}): it failed or "
                "was killed; the launcher's summary names it"
            )
            error.silent = not self.leader  # type: ignore[attr-defined]
            raise error from None

    # -- what training needs from the world ---------------------------------------------------
    def valid_share(self, samples: Sequence[T]) -> list[T]:
        """This rank's contiguous share of the valid split (only it is decoded here)."""
        if len(samples) < self.size:
            raise DataError(
                f"the valid split has {len(samples)} images, fewer than the {self.size} processes training "
                f"together; raise {flag('valid_pct')} or train with fewer processes."
            )
        return self.shard.share(samples)

    def batch_size(self, bs: int | str, global_bs: bool) -> int:
        """The batch each rank trains on: `bs`, or `bs / size` with --global-bs (it must divide)."""
        if not global_bs:
            return int(bs)
        if bs == "auto":
            raise ConfigError(f"{flag('global_bs')} needs a number for {flag('bs')} (auto picks a batch per process).")
        if int(bs) % self.size:
            raise ConfigError(
                f"{flag('global_bs')}: {flag('bs')} {bs} does not split evenly over {self.size} processes; "
                "choose a multiple of "
                f"{self.size}."
            )
        return int(bs) // self.size

    def describe(self, bs: int) -> dict[str, Any]:
        """model.json's record of how the run was trained."""
        return {"processes": self.size, "backend": self.backend, "batch_per_process": bs, "batch": bs * self.size}

    def resume_share(self, capture: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        """For ResumePoint: every rank's RNG states (captured at the same point), kept in resume.pt
        with the world size, so a resumed run continues each rank's random stream exactly."""
        return lambda: {"world_size": self.size, "rank_rng": self.objects(capture())}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _backend_reason(exc: BaseException) -> str:
    """The gist of a gloo/NCCL error: without fastai's "Exception occured in ..." line, the source
    path in brackets and the advice after the first sentence."""
    import re

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Exception occured in")] or [type(exc).__name__]
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0])
    return text.split(". ")[0][:200]


def _portable(exc: Exception, rank: int, size: int) -> FastclsError:
    """`exc` as an error another rank can raise: a FastclsError as itself (naming the rank when it is
    not rank 0's), anything else as RankFailed with its type and message."""
    if isinstance(exc, FastclsError):
        try:
            copy = pickle.loads(pickle.dumps(exc))
        except Exception:  # an error class with arguments pickle cannot rebuild
            copy = RankFailed(str(exc))
        if rank:
            copy.args = (f"{exc} (on process {rank} of {size})",)
        return copy
    return RankFailed(f"process {rank} of {size} failed: {type(exc).__name__}: {_first_line(exc)}")


def current_world() -> World | None:
    """This process's World when a distributed launcher started it (joining the process group on
    the first call), else None."""
    if _WORLD:
        return _WORLD[0]
    if not launched():
        _WORLD.append(None)
        return None
    from fastcls.device import pick_device

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device()
    backend = "gloo"
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if device.index is None and local >= count:
            raise ConfigError(
                f"process {local} on this machine has no GPU of its own ({count} here); start at most {count} "
                f"processes per machine: torchrun --nproc-per-node {count} ..."
            )
        device = device if device.index is not None else torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    # Setup (each rank decodes every training image) and rank 0's writing can keep the others waiting
    # far longer than a training step; NCCL's watchdog would end them after 10 minutes.
    control = dist.new_group(backend="gloo", timeout=timedelta(hours=2))
    world = World(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), device, control)
    if not world.leader:
        import logging
        import warnings

        warnings.simplefilter("ignore")  # rank 0 shows them once
        logging.disable(logging.WARNING)
    import atexit

    atexit.register(_leave)
    _WORLD.append(world)
    return world


def refuse_mpi() -> None:
    """For train/finetune: mpirun (and `accelerate launch --cpu --num_processes N`, which runs it) sets
    only MPI's variables, so each process would train alone on all the data into the same run folder.
    (A sweep's workers may run under mpirun: each trains its own trials.)"""
    size = next((os.environ[k] for k in _MPI_SIZES if k in os.environ), "1")
    if size.isdigit() and int(size) > 1:
        raise ConfigError(
            f"started by mpirun as one of {size} processes, which fastcls cannot join into one run; launch with "
            f"torchrun instead: torchrun --nproc-per-node {size} -m fastcls train ..."
        )


def wait_for_leader() -> None:
    """On ranks other than 0, before exiting with an error rank 0 reports: wait until rank 0 has
    exited (its printed message first), so the launcher does not stop it for this rank's exit."""
    world = _WORLD[0] if _WORLD else None
    if world is None or world.leader:
        return
    import contextlib

    with contextlib.suppress(Exception):  # rank 0 never joins: its exit ends the wait
        dist.barrier(group=world.control)


def _leave() -> None:
    import contextlib

    if dist.is_initialized():
        with contextlib.suppress(Exception):  # already torn down by a failed peer: nothing left to free
            dist.destroy_process_group()


def check_world_size(resume: Any, size: int) -> None:
    """A run continues exactly only with the number of processes it was trained with: each rank's
    random stream and share of every batch depend on it. Refuse another number, saying what works."""
    if resume is None:
        return
    trained = int(resume.state.get("world_size", 1))
    if trained == size:
        return
    how = (
        "without a distributed launcher: fastcls train --resume RUN"
        if trained == 1
        else f"with {trained} processes in all, e.g. torchrun --nproc-per-node {trained} -m fastcls train --resume RUN"
    )
    raise RunError(
        f"this run was trained by {trained} process{'es' if trained > 1 else ''} together and continues exactly "
        f"only so ({size} now): resume it {how}. To go on with {size}, fine-tune from its weights instead "
        f"(fastcls finetune DATA {flag('weights')} RUN)."
    )


def sync_batchnorm(model: nn.Module, world: World | None, report: Reporter) -> nn.Module:
    """--sync-bn: BatchNorm layers normalise by the statistics of the whole global batch (torch's
    SyncBatchNorm, which runs on CUDA only). In one process every batch is already whole."""
    if world is None:
        report.info(f"{flag('sync_bn')}: one process, so BatchNorm already sees the whole batch")
        return model
    if world.backend != "nccl":
        raise ConfigError(
            f"{flag('sync_bn')} needs CUDA GPUs (torch's SyncBatchNorm runs on GPUs only); on the CPU drop it: each "
            "process then normalises by the statistics of its own share of the batch."
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
