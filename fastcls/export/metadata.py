"""What an exported file says about itself: classes, input, preprocessing, and where it came from.

Why inside the file: the preprocessing (size, crop, interpolation, mean/std) is where exported
classifiers silently drift from the original, so it travels with the graph. ONNX keeps it in
`metadata_props` (one key per field, each value JSON, readable in Netron and by onnxruntime's
`custom_metadata_map`); `.pt2` and TorchScript files keep the same object as `fastcls.json`
among their extra files. This module needs neither torch nor onnx.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from fastcls.data.images import Preprocessing
from fastcls.errors import ExportError

__all__ = ["EXPORT_FORMAT", "EXTRA_FILE", "ExportMetadata"]

EXPORT_FORMAT = "fastcls.export/1"
EXTRA_FILE = "fastcls.json"  # the metadata's name among a .pt2 or TorchScript file's extra files


@dataclass(frozen=True)
class ExportMetadata:
    """Everything a client needs to feed an exported classifier and read its answer.

    `input_dtype` uint8 means the graph normalises (the client only resizes/crops, as
    `size`/`resize`/`crop_pct`/`interpolation` say, and passes 0..255 NCHW RGB); float32/float16
    means the client also subtracts `mean`*255 and divides by `std`*255. `batch` is None for any
    batch size, else the one the graph takes. `output_kind` is logits (apply softmax) or
    probabilities (an ensemble's vote). `mean`/`std` are None only for an ensemble whose members
    normalise differently, each inside the graph.
    """

    classes: list[str]
    size: int
    resize: str
    crop_pct: float
    interpolation: str
    mean: list[float] | None
    std: list[float] | None
    input_name: str
    input_dtype: str
    batch: int | None
    output_name: str
    output_kind: str
    half: bool
    file_format: str  # onnx, exported-program or torchscript
    exporter: str
    opset: int | None
    source: str
    arch: str
    fastcls_version: str
    format: str = EXPORT_FORMAT

    @property
    def normalised_inside(self) -> bool:
        return self.input_dtype == "uint8"

    def preprocessing(self) -> Preprocessing:
        """The Preprocessing that `load_image` needs to make this graph's input pixels."""
        mean = tuple(self.mean) if self.mean is not None else Preprocessing(self.size).mean
        std = tuple(self.std) if self.std is not None else Preprocessing(self.size).std
        return Preprocessing(self.size, mean, std, self.interpolation, self.resize, self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_props(self) -> dict[str, str]:
        """ONNX metadata_props: one key per field, each value JSON."""
        return {key: json.dumps(value) for key, value in self.to_dict().items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> ExportMetadata:
        if raw.get("format") != EXPORT_FORMAT:
            raise ExportError(
                f"{where} was not written by `fastcls export` (no {EXPORT_FORMAT} metadata), so its classes and "
                "preprocessing are unknown; export the run again with `fastcls export RUN`."
            )
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in names})
        except TypeError as exc:
            raise ExportError(f"{where} has incomplete fastcls metadata ({exc}); export the run again.") from None

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> ExportMetadata:
        try:
            raw = {key: json.loads(value) for key, value in props.items() if key in {f.name for f in fields(cls)}}
        except json.JSONDecodeError as exc:
            raise ExportError(f"{where} has damaged fastcls metadata ({exc}); export the run again.") from None
        return cls.from_dict(raw, where)

    @classmethod
    def from_json(cls, text: str, where: str) -> ExportMetadata:
        try:
            raw = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise ExportError(f"{where} has damaged fastcls metadata ({exc}); export the run again.") from None
        return cls.from_dict(raw if isinstance(raw, dict) else {}, where)
