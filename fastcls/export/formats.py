"""The export formats, one entry each in `FORMATS`: how to write a module, read its metadata back,
and run the file in its own runtime (what the parity check uses).

A new format is one `ExportFormat` entry: `write(module, example, path, metadata, settings)`
returns the metadata as written plus notes; `runner(path)` returns a numpy batch -> numpy
function running the file where a user would run it (onnxruntime, torch.export.load, torch.jit.load).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastcls.errors import ExportError
from fastcls.export.metadata import EXTRA_FILE, ExportMetadata
from fastcls.registry import Registry

__all__ = ["FORMATS", "ExportFormat", "get_format", "read_metadata"]


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    runtime: str
    write: Callable[[Any, Any, Path, ExportMetadata, Any], tuple[ExportMetadata, list[str]]]  # .., ExportSettings
    runner: Callable[[Path], Callable[[Any], Any]]
    read: Callable[[Path], ExportMetadata]
    help: str


# -- onnx ---------------------------------------------------------------------------------------
def _write_onnx(module, example, path, metadata, settings):
    from fastcls.export.onnx_file import write_onnx

    exporter, opset, dynamic = settings.exporter or "auto", settings.opset, settings.dynamic_batch
    return write_onnx(module, example, path, metadata, exporter, opset, dynamic)


def _onnx_runner(path):
    from fastcls.export.onnx_file import onnx_runner

    return onnx_runner(path)


def _read_onnx(path):
    from fastcls.export.onnx_file import load_onnx_session, read_onnx_metadata

    return read_onnx_metadata(load_onnx_session(path), str(path))


# -- torch.export (.pt2) ---------------------------------------------------------------------------
def _write_program(module, example, path, metadata, settings):
    import torch

    from fastcls.export.onnx_file import failure_reason
    from fastcls.export.quiet import quiet_output

    shapes = ({0: torch.export.Dim("batch")},) if settings.dynamic_batch else None
    try:
        with quiet_output():
            program = torch.export.export(module, (example,), dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # torch.export raises UserError, GuardOnDataDependentSymNode, Unsupported, ...
        raise ExportError(
            f"torch.export cannot capture this model ({failure_reason(exc)}); try --format torchscript, or "
            "remove the Python control flow that depends on tensor values or shapes."
        ) from None
    metadata = replace(metadata, exporter="torch.export")
    torch.export.save(program, str(path), extra_files={EXTRA_FILE: metadata.to_json()})
    return metadata, []


def _program_runner(path):
    import torch

    module = _load_program(path, {}).module()

    def run(batch):
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    return run


def _load_program(path: Path, extra: dict[str, str]):
    import torch

    from fastcls.export.onnx_file import failure_reason
    from fastcls.export.quiet import quiet_output

    try:
        with quiet_output():
            return torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # a damaged or foreign zip raises several types
        raise ExportError(f"{path} cannot be loaded by torch.export.load ({failure_reason(exc)}).") from None


def _read_program(path):
    extra = {EXTRA_FILE: ""}
    _load_program(path, extra)
    return ExportMetadata.from_json(extra[EXTRA_FILE], str(path))


# -- TorchScript ------------------------------------------------------------------------------------
def _write_torchscript(module, example, path, metadata, settings):
    import torch

    from fastcls.export.onnx_file import failure_reason
    from fastcls.export.quiet import quiet_output

    metadata = replace(metadata, exporter="torch.jit.trace")
    try:
        with quiet_output(), torch.no_grad():
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: metadata.to_json()})
    except Exception as exc:  # tracing raises RuntimeError/TracingCheckError/TypeError
        raise ExportError(f"torch.jit.trace cannot trace this model ({failure_reason(exc)}).") from None
    return metadata, []


def _load_torchscript(path: Path, extra: dict[str, str]):
    import torch

    from fastcls.export.onnx_file import failure_reason
    from fastcls.export.quiet import quiet_output

    try:
        with quiet_output():
            return torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    except Exception as exc:  # RuntimeError for foreign or damaged archives
        raise ExportError(f"{path} cannot be loaded by torch.jit.load ({failure_reason(exc)}).") from None


def _torchscript_runner(path):
    import torch

    module = _load_torchscript(path, {})

    def run(batch):
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()

    return run


def _read_torchscript(path):
    extra = {EXTRA_FILE: ""}
    _load_torchscript(path, extra)
    return ExportMetadata.from_json(extra[EXTRA_FILE], str(path))


FORMATS: Registry[ExportFormat] = Registry(
    "--format",
    {
        spec.name: spec
        for spec in (
            ExportFormat(
                "onnx",
                ".onnx",
                "onnxruntime",
                _write_onnx,
                _onnx_runner,
                _read_onnx,
                "ONNX for onnxruntime, TensorRT, OpenVINO, mobile and C++ (torch.onnx.export)",
            ),
            ExportFormat(
                "exported-program",
                ".pt2",
                "torch.export.load",
                _write_program,
                _program_runner,
                _read_program,
                "a torch.export program (.pt2) for torch, AOTInductor and ExecuTorch",
            ),
            ExportFormat(
                "torchscript",
                ".torchscript",
                "torch.jit.load",
                _write_torchscript,
                _torchscript_runner,
                _read_torchscript,
                "TorchScript (torch.jit.trace) for older runtimes and LibTorch; deprecated in torch itself",
            ),
        )
    },
)


def get_format(name: str) -> ExportFormat:
    return FORMATS.lookup(name)


def read_metadata(path: str | Path) -> ExportMetadata:
    """The fastcls metadata of an exported file, by its suffix (.onnx needs only onnxruntime)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ExportError(f"{file} does not exist; give a file written by `fastcls export`.")
    for spec in FORMATS.values():
        if file.suffix.lower() == spec.suffix:
            return spec.read(file)
    raise ExportError(
        f"{file} has suffix {file.suffix!r}; fastcls exports end in {', '.join(s.suffix for s in FORMATS.values())}."
    )
