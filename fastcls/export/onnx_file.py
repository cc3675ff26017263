"""ONNX files: write with torch's dynamo exporter (else the classic TorchScript-based one), add the
metadata, and run them in onnxruntime.

Which exporter: `auto` tries dynamo first (torch's default since 2.9, the one being maintained)
and falls back to the classic exporter only when dynamo fails, saying why. Checked with torch
2.14.1, onnxruntime 1.32: both work for the scratch cnn, tf_efficientnet_lite0, and torchvision
resnet18/mobilenet_v3_small (max |Δ logit| below 2e-6 either way); dynamo takes ~20 s for
efficientnet_lite0 on two busy cores (its decompositions), classic ~3 s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastcls.errors import ExportError
from fastcls.export.metadata import ExportMetadata

__all__ = ["ONNX_EXPORTERS", "load_onnx_session", "onnx_runner", "read_onnx_metadata", "write_onnx"]

ONNX_EXPORTERS = ("auto", "dynamo", "classic")


def failure_reason(exc: BaseException) -> str:
    """The innermost cause's first line, without terminal colours: the part that names the op."""
    import re

    chain = [exc]
    while (chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)  # type: ignore[arg-type]
    for candidate in reversed(chain):
        lines = [line.strip() for line in str(candidate).splitlines() if line.strip()]
        if lines:
            text = re.sub(r"\x1b\[[0-9;]*m", "", lines[0])
            return f"{type(candidate).__name__}: {text[:400]}"
    return type(exc).__name__


def _dynamo(module: Any, example: Any, path: Path, names: tuple[str, str], opset: int | None, dynamic: bool) -> None:
    import torch

    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=[names[0]],
        output_names=[names[1]],
        opset_version=opset,
        dynamic_shapes=shapes,
        verbose=False,
    )


def _classic(module: Any, example: Any, path: Path, names: tuple[str, str], opset: int | None, dynamic: bool) -> None:
    import torch

    axes = {names[0]: {0: "batch"}, names[1]: {0: "batch"}} if dynamic else None
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=False,
        input_names=[names[0]],
        output_names=[names[1]],
        opset_version=opset,
        dynamic_axes=axes,
        do_constant_folding=True,
        verbose=False,
    )


_WRITERS: dict[str, Callable[..., None]] = {"dynamo": _dynamo, "classic": _classic}


def write_onnx(
    module: Any,
    example: Any,
    path: Path,
    metadata: ExportMetadata,
    exporter: str = "auto",
    opset: int | None = None,
    dynamic: bool = True,
) -> tuple[ExportMetadata, list[str]]:
    """Export `module` to `path` and add `metadata` (with the exporter and opset filled in): (it, notes)."""
    from dataclasses import replace

    from fastcls.export.quiet import quiet_output

    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'fastcls[export]'.") from None

    if exporter not in ONNX_EXPORTERS:
        raise ExportError(f"--exporter {exporter!r} is not one of {', '.join(ONNX_EXPORTERS)}.")
    order = ["dynamo", "classic"] if exporter == "auto" else [exporter]
    names = (metadata.input_name, metadata.output_name)
    failures: list[str] = []
    used = None
    for name in order:
        try:
            with quiet_output():
                _WRITERS[name](module, example, path, names, opset, dynamic)
            used = name
            break
        except Exception as exc:  # exporters raise many types (ConversionError, UnsupportedOperatorError, ...)
            failures.append(f"the {name} exporter failed ({failure_reason(exc)})")
            path.unlink(missing_ok=True)
    if used is None:
        raise ExportError(
            f"this model cannot be exported to ONNX: {'; '.join(failures)}. Try --format exported-program "
            "(torch.export) or --format torchscript, or replace the unsupported operation in the model."
        )
    model = onnx.load(str(path))
    written = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    metadata = replace(metadata, exporter=used, opset=written)
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    notes = [f"{failure}; used the classic exporter" for failure in failures]
    return metadata, notes


def load_onnx_session(path: str | Path, providers: list[str] | None = None):
    """An onnxruntime session (CPU unless `providers` says otherwise); a clear error without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(
            "running ONNX files needs onnxruntime: pip install 'fastcls[export]' (or pip install onnxruntime)."
        ) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph optimisations, not results
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        raise ExportError(
            f"onnxruntime {ort.__version__} cannot load {path}: {failure_reason(exc)}. On the CPU this often means "
            "an operation has no kernel for the file's dtype (fp16); export without --half."
        ) from None


def read_onnx_metadata(session: Any, where: str) -> ExportMetadata:
    return ExportMetadata.from_props(dict(session.get_modelmeta().custom_metadata_map), where)


def onnx_runner(path: Path) -> Callable[[Any], Any]:
    """numpy batch -> numpy output, through onnxruntime on the CPU."""
    session = load_onnx_session(path)
    name = session.get_inputs()[0].name

    def run(batch):
        try:
            return session.run(None, {name: batch})[0]
        except Exception as exc:  # onnxruntime's RuntimeException/Fail/NotImplemented
            raise ExportError(f"onnxruntime cannot run {path.name}: {failure_reason(exc)}") from None

    return run
