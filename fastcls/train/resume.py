"""What an exact resume needs beyond the weights: optimiser, RNGs and callback state at an epoch's end.

Written as `checkpoints/resume.pt` after every finished epoch and read back with
`torch.load(weights_only=True)`, so it holds only tensors and plain Python values (no pickled
classes): numpy arrays and scalars become tensors and floats, fastcore `L` lists become lists.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastcls.config import flag
from fastcls.errors import RunError

__all__ = [
    "CHECKPOINT_EPOCHS",
    "RESUME_FILE",
    "RESUME_FORMAT",
    "capture_rng",
    "pending_checkpoint",
    "plain",
    "read_resume_point",
    "read_state",
    "restore_rng",
    "resumable_epoch",
    "settle_checkpoints",
    "write_state",
]

RESUME_FILE = "resume.pt"
RESUME_FORMAT = 1


def plain(value: Any) -> Any:
    """A copy of `value` that `torch.load(weights_only=True)` accepts: tensors, numbers, str, lists, dicts."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()  # serialised at once, so no copy is needed
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "L":
        items = [plain(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG a training epoch draws from: torch (CPU and CUDA), Python, NumPy, the batch order."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": (int(has_gauss), float(gauss)),
        "batches": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    numpy = state["numpy"]
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], has_gauss, gauss))
    generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """random.setstate wants tuples all the way down."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Serialise with torch.save into memory, then write atomically (a crash never leaves half a file)."""
    from fastcls.runs import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(plain({"format": RESUME_FORMAT, **state}), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_state(path: Path) -> dict[str, Any]:
    """Load a resume file with `weights_only=True`; a missing, truncated or foreign file is a RunError."""
    if not path.is_file():
        raise RunError(
            f"{path} is missing, so this run cannot be resumed exactly; start a new run, or use its weights "
            f"with `fastcls finetune DATA {flag('weights')} RUN`."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle opcode, foreign object: all mean "damaged"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path} is damaged or not a fastcls resume file ({first}); it cannot be resumed.") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise RunError(f"{path} is not a fastcls resume file of format {RESUME_FORMAT}; it cannot be resumed.")
    return state


# -- one epoch's files, consistent with each other ----------------------------------------------
# At the end of epoch k the checkpoints it changed are written as `.NAME.epoch-K.safetensors`,
# then resume.pt (atomically: the record that makes epoch k complete, naming each checkpoint's
# epoch), then the pending files are renamed to `NAME.safetensors`. A kill before resume.pt leaves
# epoch k-1 whole (the pending files are deleted on resume); a kill after it leaves renames that
# `settle_checkpoints` finishes. So the checkpoints that load always belong to resume.pt's epoch.
CHECKPOINT_EPOCHS = "checkpoint_epochs"


def pending_checkpoint(name: str, epoch: int) -> str:
    """The file name of checkpoint `name` of epoch `epoch` until its epoch is recorded in resume.pt."""
    return f".{name}.epoch-{epoch}.safetensors"


def settle_checkpoints(folder: Path, epochs: dict[str, int]) -> None:
    """Finish the renames a kill interrupted (checkpoints of the recorded epochs), then delete the
    pending and temporary files of an epoch that never completed."""
    for name, epoch in epochs.items():
        pending = folder / pending_checkpoint(name, int(epoch))
        if pending.is_file():
            os.replace(pending, folder / f"{name}.safetensors")
    for leftover in [*folder.glob(".*.epoch-*.safetensors"), *folder.glob(".*.tmp"), *folder.parent.glob(".*.tmp")]:
        leftover.unlink(missing_ok=True)


def read_resume_point(run: Path, card_epochs: dict[str, int] | None = None):
    """(state, metrics rows, checkpoint tensors, checkpoint epochs) of the last finished epoch in `run`.

    metrics.csv may hold a row more than resume.pt (a kill between the two): only the rows of the
    finished epochs are returned. `card_epochs`: model.json's list, for resume files written before
    resume.pt named the checkpoints.
    """
    from safetensors import SafetensorError, safe_open

    from fastcls.runs import read_metrics

    folder = run / "checkpoints"
    state = read_state(folder / RESUME_FILE)
    done = int(state["epoch"])
    epochs = {str(k): int(v) for k, v in (state.get(CHECKPOINT_EPOCHS) or card_epochs or {}).items()}
    if "last" not in epochs:
        raise RunError(f"{folder / RESUME_FILE} names no `last` checkpoint; this run cannot be resumed.")
    settle_checkpoints(folder, epochs)
    tensors = {}
    for name, epoch in epochs.items():
        path = folder / f"{name}.safetensors"
        try:
            with safe_open(str(path), framework="pt") as handle:
                written = (handle.metadata() or {}).get("epoch")
                tensors[name] = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise RunError(
                f"{path} is missing or damaged ({str(exc).splitlines()[0]}); this run cannot be resumed."
            ) from None
        if written is not None and int(written) != epoch:
            raise RunError(f"{path} holds epoch {written}, but {RESUME_FILE} expects {epoch}; it cannot be resumed.")
    history = read_metrics(run / "metrics.csv")
    if len(history) < done:
        raise RunError(f"{run}/metrics.csv has {len(history)} rows but the run finished {done} epochs.")
    return state, history[:done], tensors, epochs


def resumable_epoch(run: Path) -> tuple[int | None, str]:
    """(the epoch a staging folder can resume after, "") or (None, why it cannot), reading only."""
    if not (run / "config.toml").is_file():
        return None, "no config.toml: it stopped before its first epoch began"
    if not (run / "checkpoints" / RESUME_FILE).is_file():
        return None, "no finished epoch"
    try:
        state = torch.load(run / "checkpoints" / RESUME_FILE, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated zip, foreign object: damaged
        return None, f"checkpoints/{RESUME_FILE} is damaged ({type(exc).__name__})"
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        return None, f"checkpoints/{RESUME_FILE} is not a fastcls resume file"
    return int(state["epoch"]), ""
