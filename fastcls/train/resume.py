"""What an exact resume needs beyond the weights: optimiser, RNGs and callback state at an epoch's end.

Written as `checkpoints/resume.pt` after every finished epoch and read back with
`torch.load(weights_only=True)`, so it holds only tensors and plain Python values (no pickled
classes): numpy arrays and scalars become tensors and floats, fastcore `L` lists become lists.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastcls.errors import RunError

__all__ = ["RESUME_FILE", "RESUME_FORMAT", "capture_rng", "plain", "read_state", "restore_rng", "write_state"]

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
            "with `fastcls finetune DATA --weights RUN`."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle opcode, foreign object: all mean "damaged"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path} is damaged or not a fastcls resume file ({first}); it cannot be resumed.") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise RunError(f"{path} is not a fastcls resume file of format {RESUME_FORMAT}; it cannot be resumed.")
    return state
