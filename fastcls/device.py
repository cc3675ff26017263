"""Which device computes: a CUDA GPU when there is one, else the CPU (`FASTCLS_DEVICE` overrides)."""

from __future__ import annotations

import os

import torch

from fastcls.errors import ConfigError

__all__ = ["pick_device"]


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
