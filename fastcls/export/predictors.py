"""Any predictor from a path: a run folder, an ensemble, or a file `fastcls export` wrote.

Here, above both the ensemble and the ONNX runtime, because it dispatches to each of them.
"""

from __future__ import annotations

from pathlib import Path

from fastcls.api import ImageClassifier, load
from fastcls.export.onnx_predictor import OnnxClassifier, load_onnx
from fastcls.studies.ensemble import EnsembleClassifier, load_ensemble

__all__ = ["load_predictor"]


def load_predictor(path: str | Path) -> ImageClassifier | EnsembleClassifier | OnnxClassifier:
    """A run folder -> `fastcls.load`; an ensemble.json, or a folder with one and no model.json -> `load_ensemble`;
    an .onnx file from `fastcls export` -> an onnxruntime classifier (no torch)."""
    target = Path(path).expanduser()
    if target.suffix.lower() == ".onnx" and not target.is_dir():
        return load_onnx(target)
    is_json = target.is_file() and target.suffix.lower() == ".json" and target.name != "model.json"
    holds_json = target.is_dir() and (target / "ensemble.json").is_file() and not (target / "model.json").is_file()
    if is_json or holds_json:
        return load_ensemble(target)
    return load(target)
