"""Self-supervised pretraining of a backbone (`fastcls pretrain`), for fine-tuning with `--weights RUN`.

Importing this package is cheap; torch and lightly load when a run starts.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["METHODS", "PretrainConfig", "PretrainResult", "pretrain", "resume_pretrain"]

_LAZY = {
    "METHODS": "fastcls.pretrain.methods",
    "PretrainConfig": "fastcls.pretrain.config",
    "PretrainResult": "fastcls.pretrain.run",
    "pretrain": "fastcls.pretrain.run",
    "resume_pretrain": "fastcls.pretrain.run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastcls.pretrain' has no attribute {name!r}")
