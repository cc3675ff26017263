"""fastcls: train and fine-tune image classifiers in one command or one Python call.

Heavy modules (torch, fastai, timm) load on first use, so `import fastcls` and `fastcls --help`
stay instant.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# PyTorch reads this once, at its first CPU allocation: tensors of 2 MiB and more get transparent huge
# pages. Measured here (2 cores, a VM where every fresh page faults expensively): normalising a batch of
# 64 x 3 x 224 x 224 took 0.72 ms/image without and 0.22 with, and the augmented in-memory loader went
# from about 600 to 900 images/s (benchmarks/data_pipeline.py). Set it to 0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from fastcls.version import __version__

__all__ = [
    "Config",
    "Ensemble",
    "Evaluation",
    "FastclsError",
    "ImageClassifier",
    "Prediction",
    "__version__",
    "load",
    "load_config",
    "resolve_source",
    "resume_run",
    "train_run",
]

_LAZY = {
    "Config": "fastcls.config",
    "load_config": "fastcls.config",
    "FastclsError": "fastcls.errors",
    "Ensemble": "fastcls.studies.ensemble",
    "Evaluation": "fastcls.evaluation",
    "ImageClassifier": "fastcls.api",
    "Prediction": "fastcls.api",
    "load": "fastcls.api",
    "train_run": "fastcls.runner",
    "resume_run": "fastcls.runner",
    "resolve_source": "fastcls.data.sources",
}

if TYPE_CHECKING:
    from fastcls.api import Evaluation, ImageClassifier, Prediction, load
    from fastcls.config import Config, load_config
    from fastcls.data.sources import resolve_source
    from fastcls.errors import FastclsError
    from fastcls.runner import resume_run, train_run
    from fastcls.studies.ensemble import Ensemble


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastcls' has no attribute {name!r}")
