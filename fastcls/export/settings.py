"""The settings of one export, checked together so no option is accepted and then ignored."""

from __future__ import annotations

from dataclasses import dataclass

from fastcls.errors import ConfigError

__all__ = ["ExportSettings"]


@dataclass(frozen=True)
class ExportSettings:
    """`exporter` and `opset` are for onnx only (None: auto, and the exporter's default opset).

    `dynamic_batch=False` fixes the batch at 1 (onnx and exported-program; a TorchScript trace
    takes any batch). `with_preprocessing`: uint8 NCHW input, normalisation inside the graph.
    `half`: float16 weights and activations, checked with the looser tolerance of `parity`.
    `parity_images`: how many test (else valid) images the parity check uses; 0 means all.
    """

    format: str = "onnx"
    opset: int | None = None
    exporter: str | None = None
    dynamic_batch: bool = True
    with_preprocessing: bool = False
    half: bool = False
    parity_images: int = 1000

    def __post_init__(self) -> None:
        from fastcls.export.formats import get_format
        from fastcls.export.onnx_file import ONNX_EXPORTERS

        get_format(self.format)
        if self.format != "onnx":
            for flag, value in (("--opset", self.opset), ("--exporter", self.exporter)):
                if value is not None:
                    raise ConfigError(f"{flag} is for --format onnx; {self.format} has no such setting.")
        if self.exporter is not None and self.exporter not in ONNX_EXPORTERS:
            raise ConfigError(f"--exporter {self.exporter!r} is not one of {', '.join(ONNX_EXPORTERS)}.")
        if self.opset is not None and not 7 <= self.opset <= 30:
            raise ConfigError(f"--opset {self.opset} is not an ONNX opset; give one from 7 to 30 (e.g. 18).")
        if self.format == "torchscript" and not self.dynamic_batch:
            raise ConfigError(
                "--static is for onnx and exported-program; a TorchScript trace takes any batch size. "
                "Leave out --static."
            )
        if self.parity_images < 0:
            raise ConfigError(f"--parity-images {self.parity_images} must be 0 (all) or more.")

    @property
    def batch(self) -> int | None:
        """The batch the graph takes: None for any."""
        return None if self.dynamic_batch else 1
