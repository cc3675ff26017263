"""Which device computes: a CUDA GPU when there is one, else the CPU (`FASTCLS_DEVICE` overrides)."""

from __future__ import annotations

import os

import torch

from fastcls.errors import ConfigError

__all__ = ["inference_batch", "pick_device"]


def pick_device() -> torch.device:
    """`FASTCLS_DEVICE` (e.g. cpu, cuda:1) if set, else cuda when available, else cpu."""
    wanted = os.environ.get("FASTCLS_DEVICE")
    if wanted:
        try:
            device = torch.device(wanted)
        except RuntimeError:
            raise ConfigError(f"FASTCLS_DEVICE={wanted!r} is not a device name such as cpu or cuda:0.") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"FASTCLS_DEVICE={wanted!r} but no CUDA GPU is available here.")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def inference_batch(device: torch.device, bs: int = 0) -> int:
    """The batch size of forward passes without gradients (validation, scoring, cached features): 64 on
    the CPU, where bigger batches were slower (EfficientNet-Lite0 at 96 px on 2 cores: 2.3-2.6 ms an
    image at 64, 3.6-9.8 ms at 256, the larger activations falling out of cache), else the larger of
    `bs` and 256, to keep a GPU busy."""
    return 64 if device.type == "cpu" else max(bs, 256)
