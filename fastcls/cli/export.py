"""`fastcls export`: a run or an ensemble as ONNX, a torch.export program or TorchScript, parity-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fastcls.cli.common import console, handled, json_printed, passed, reporter_for
from fastcls.cli.options import AsJson, Quiet

# ruff: noqa: UP045  (Typer needs Optional[...] inside Annotated on Python 3.10)
__all__ = ["register"]

_FORMAT_HELP = (
    "onnx (onnxruntime, TensorRT, C++), exported-program (.pt2, torch.export) or torchscript (older runtimes)."
)


def export(
    run: Annotated[Path, typer.Argument(help="A run folder, or an ensemble.json from `fastcls ensemble vote`.")],
    format: Annotated[str, typer.Option("--format", "-f", help=_FORMAT_HELP)] = "onnx",
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="The file to write (default: model.<suffix> in the run folder)."),
    ] = None,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default: the exporter's; 20).")] = None,
    exporter: Annotated[
        Optional[str],
        typer.Option(help="ONNX exporter: auto (dynamo, else classic; the default), dynamo or classic."),
    ] = None,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch/--static", help="Any batch size, or a graph fixed at batch 1.")
    ] = True,
    with_preprocessing: Annotated[
        bool,
        typer.Option(
            "--with-preprocessing",
            help="Take uint8 NCHW pixels at the model's size and normalise inside the graph; clients only resize/crop.",
        ),
    ] = False,
    half: Annotated[
        bool, typer.Option("--half", help="float16 weights and activations (looser parity tolerance: 1%).")
    ] = False,
    data: Annotated[
        Optional[str],
        typer.Option(help="Images for the parity check (default: the data the run was trained or voted on)."),
    ] = None,
    split: Annotated[Optional[str], typer.Option(help="The parity check's split (default: test, else valid).")] = None,
    parity_images: Annotated[
        int, typer.Option(help="At most this many images for the parity check, evenly spaced; 0 for all.")
    ] = 1000,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Replace the --out file if it exists.")] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Export a run so another runtime gives the same answers; the file is kept only if a parity check passes.

    The export is loaded back in its runtime (onnxruntime for ONNX) and compared with the PyTorch model on
    the run's test (else valid) images: 100% top-1 agreement and max |Δ logit| ≤ 1e-4 (fp32), or exit 1
    with no file. Example: fastcls export runs/digits-cnn --with-preprocessing
    """
    from fastcls.export.exporting import export as export_run

    options = passed(
        locals(), "data split exist_ok format opset exporter dynamic_batch with_preprocessing half parity_images"
    )
    result = export_run(run, out, reporter=reporter_for(quiet or as_json), **options)
    if json_printed(result, as_json):
        return
    screen = console()
    screen.print(f"exported {result.source} -> [bold]{result.path}[/bold]")
    screen.print(f"  {result.describe()}")
    for note in result.notes:
        screen.print(f"  [yellow]note: {note}[/yellow]")
    screen.print(f"  {result.parity.summary()}")
    if result.path.suffix == ".onnx":
        screen.print(f"  predict with: fastcls predict {result.path} IMAGES")


def register(app: typer.Typer) -> None:
    app.command()(handled(export))
