"""Speed switches that change how, not what, the model computes: `--bs auto` and `--compile`."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from fastcls.config import flag

__all__ = ["CPU_BATCH_SIZE", "auto_batch_size", "compile_model", "largest_fitting"]

CPU_BATCH_SIZE = 64  # `--bs auto` on the CPU: memory is rarely the limit there, and 64 trains well


def largest_fitting(fits: Callable[[int], bool], start: int = 16, limit: int = 4096) -> int:
    """The largest n in [1, limit] with fits(n), assuming fits is monotone: double from `start`
    until it fails (or reaches `limit`), then bisect between the last success and the failure.
    Lightning's BatchSizeFinder does the same ("binsearch" mode)."""
    low, high = 0, None
    n = min(start, limit)
    while n <= limit:
        if not fits(n):
            high = n
            break
        low = n
        if n == limit:
            return n
        n = min(n * 2, limit)
    if high is None:
        return low
    if low == 0:  # even `start` failed: bisect below it
        while n > 1 and not fits(n // 2):
            n //= 2
        low, high = n // 2, n
        if low == 0:
            return 0
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def auto_batch_size(model: nn.Module, size: int, device: torch.device, n_train: int, channels_last: bool) -> int:
    """`--bs auto`: on a GPU, the largest batch whose forward and backward fit in memory (tried on
    random inputs, the model's weights and BatchNorm statistics restored afterwards), capped by the
    training set; on the CPU, CPU_BATCH_SIZE."""
    if device.type != "cuda":
        return min(CPU_BATCH_SIZE, max(n_train, 1))
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    classes = None

    def fits(n: int) -> bool:
        nonlocal classes
        try:
            x = torch.randn(n, 3, size, size, device=device).contiguous(memory_format=fmt)
            out = model.train()(x)
            classes = out.shape[-1]
            nn.functional.cross_entropy(out, torch.randint(0, classes, (n,), device=device)).backward()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    try:
        with torch.random.fork_rng(devices=[device]):  # the search must not shift the run's random stream
            found = largest_fitting(fits, start=16, limit=min(4096, max(n_train, 1)))
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    if found == 0:
        from fastcls.errors import ConfigError

        raise ConfigError(
            f"not even a batch of 1 fits in GPU memory at {size}px; lower {flag('size')} or pick a smaller arch."
        )
    return max(1, found - found // 8)  # leave room for the optimiser state and fragmentation


def compile_model(model: nn.Module) -> nn.Module:
    """`--compile`: torch.compile the module in place (`nn.Module.compile`), so its state_dict keys,
    checkpoints and saved weights stay those of the plain model. FASTCLS_COMPILE_BACKEND picks the
    backend (default inductor, which needs a C/C++ compiler on the CPU; `eager` checks the wiring)."""
    model.compile(backend=os.environ.get("FASTCLS_COMPILE_BACKEND", "inductor"))
    return model
