"""`fastcls predict model.onnx IMAGES`: an exported file as a classifier, with onnxruntime and no torch.

The images go through the same `load_image` (Pillow + numpy) as training and `fastcls predict
RUN`, with the preprocessing stored in the file, and the same float32 normalisation when the
graph does not do it, so the two print the same classes and probabilities (to ~1e-6).
This module must not import torch: a deployment needs only onnxruntime, numpy and Pillow.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fastcls.data.images import BadImageError, load_image
from fastcls.errors import DataError, ExportError
from fastcls.export.metadata import ExportMetadata
from fastcls.export.onnx_file import load_onnx_session, read_onnx_metadata
from fastcls.predictions import Prediction, expand_images, rank_predictions

__all__ = ["OnnxClassifier", "load_onnx"]

_CHUNK = 64  # images per onnxruntime call when the graph takes any batch size


class OnnxClassifier:
    """An ONNX file from `fastcls export`, with ImageClassifier's `classes`, `predict_proba`, `predict`."""

    def __init__(self, path: str | Path, providers: list[str] | None = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ExportError(f"{self.path} does not exist; give an .onnx file written by `fastcls export`.")
        self.session = load_onnx_session(self.path, providers)
        self.metadata: ExportMetadata = read_onnx_metadata(self.session, str(self.path))
        self.preprocessing = self.metadata.preprocessing()
        self._input = self.session.get_inputs()[0].name
        meta = self.metadata
        dtype = np.dtype(meta.input_dtype)
        scale = np.asarray(meta.std if meta.std is not None else self.preprocessing.std, dtype=np.float32) * 255
        shift = np.asarray(meta.mean if meta.mean is not None else self.preprocessing.mean, dtype=np.float32) * 255
        self._dtype, self._scale, self._shift = dtype, scale.reshape(1, 3, 1, 1), shift.reshape(1, 3, 1, 1)

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.classes)

    def _feed(self, images: np.ndarray) -> np.ndarray:
        """uint8 pixels -> the graph's input: as they are, or normalised as Batches.normalise does (float32)."""
        if self.metadata.normalised_inside:
            return images
        normalised = (images.astype(np.float32) - self._shift) / self._scale
        return normalised.astype(self._dtype)

    def _scores(self, images: np.ndarray) -> np.ndarray:
        step = self.metadata.batch or _CHUNK
        outputs = []
        for start in range(0, len(images), step):
            try:
                outputs.append(self.session.run(None, {self._input: self._feed(images[start : start + step])})[0])
            except Exception as exc:  # onnxruntime's own exception types
                raise ExportError(f"onnxruntime cannot run {self.path.name}: {str(exc).splitlines()[0]}") from None
        raw = np.concatenate(outputs).astype(np.float32)
        if self.metadata.output_kind == "probabilities":
            return raw
        shifted = np.exp(raw - raw.max(-1, keepdims=True))  # softmax in float32, as torch's .float().softmax(-1)
        return shifted / shifted.sum(-1, keepdims=True)

    def predict_proba(self, images: list[str | Path] | str | Path) -> tuple[np.ndarray, list[Path]]:
        """(an (N, classes) array of probabilities, the paths they belong to); unreadable files skipped."""
        paths = expand_images([images] if isinstance(images, str | Path) else list(images))

        def one(path: Path) -> np.ndarray | str:
            try:
                return load_image(path, self.preprocessing)
            except (BadImageError, FileNotFoundError) as exc:
                return str(exc)

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            decoded = list(pool.map(one, paths))
        kept = [(a, p) for a, p in zip(decoded, paths, strict=True) if not isinstance(a, str)]
        if not kept:
            raise DataError(f"none of the {len(paths)} image(s) could be read, first error: {decoded[0]}.")
        return self._scores(np.stack([a for a, _ in kept])), [p for _, p in kept]

    def predict(self, images: list[str | Path] | str | Path, top: int = 3) -> list[Prediction]:
        """The most likely class of each image, with the `top` classes and their probabilities."""
        probs, paths = self.predict_proba(images)
        return rank_predictions(probs, paths, self.classes, top)


def load_onnx(path: str | Path) -> OnnxClassifier:
    """An .onnx file from `fastcls export` as a classifier (onnxruntime on the CPU)."""
    return OnnxClassifier(path)
