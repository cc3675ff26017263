"""Ship a run as ONNX, a torch.export program or TorchScript that gives the same answers.

    from fastcls.export import export
    result = export("runs/digits-cnn", format="onnx", with_preprocessing=True)
    print(result.parity.summary())

Every export is checked on the data's own test (else valid) images in its own runtime before it
is kept (see `parity`). `load_onnx` runs an exported .onnx with onnxruntime and no torch.
Importing this package imports neither torch nor onnx; the functions do, when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "FORMATS",
    "ExportMetadata",
    "ExportResult",
    "ExportSettings",
    "OnnxClassifier",
    "Parity",
    "export",
    "export_classifier",
    "export_ensemble",
    "load_onnx",
    "read_metadata",
]

_LAZY = {
    "FORMATS": "fastcls.export.formats",
    "read_metadata": "fastcls.export.formats",
    "ExportMetadata": "fastcls.export.metadata",
    "ExportResult": "fastcls.export.exporting",
    "export": "fastcls.export.exporting",
    "export_classifier": "fastcls.export.exporting",
    "export_ensemble": "fastcls.export.exporting",
    "ExportSettings": "fastcls.export.settings",
    "OnnxClassifier": "fastcls.export.onnx_predictor",
    "load_onnx": "fastcls.export.onnx_predictor",
    "Parity": "fastcls.export.parity",
}

if TYPE_CHECKING:
    from fastcls.export.exporting import ExportResult, export, export_classifier, export_ensemble
    from fastcls.export.formats import FORMATS, read_metadata
    from fastcls.export.metadata import ExportMetadata
    from fastcls.export.onnx_predictor import OnnxClassifier, load_onnx
    from fastcls.export.parity import Parity
    from fastcls.export.settings import ExportSettings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastcls.export' has no attribute {name!r}")
