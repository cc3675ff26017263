"""Export a run or an ensemble to one file, check it on real images, and keep it only if it passes.

    result = fastcls.export.export("runs/digits-cnn", format="onnx", with_preprocessing=True)
    result.path, result.parity.agreement, result.parity.max_abs_diff

The file is written to a hidden temporary file beside its destination, loaded back in its own
runtime, run on the data's test (else valid) images and compared with the PyTorch model; only
then is it renamed into place. A failed export or parity check leaves no file, and an existing
file at the destination is replaced atomically or not at all.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fastcls.errors import DataError, ExportError, FastclsError, RunError
from fastcls.export.formats import get_format
from fastcls.export.graphs import EXPORTABLE_VOTES, EnsembleGraph, ModelGraph, Normalise
from fastcls.export.metadata import ExportMetadata
from fastcls.export.onnx_file import failure_reason
from fastcls.export.parity import Parity, base_tolerance, compare
from fastcls.export.settings import ExportSettings
from fastcls.reporting import Reporter, as_reporter

if TYPE_CHECKING:
    from fastcls.api import ImageClassifier
    from fastcls.data.images import Preprocessing
    from fastcls.studies.ensemble import EnsembleClassifier

__all__ = ["ExportResult", "default_export_path", "export", "export_classifier", "export_ensemble"]

PARITY_BATCH = 32


@dataclass
class ExportResult:
    """The kept file, what it holds, and the parity check it passed."""

    path: Path
    source: str
    metadata: ExportMetadata
    parity: Parity
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        meta = self.metadata
        how = f"{meta.exporter} exporter" if meta.file_format == "onnx" else meta.exporter
        if meta.opset is not None:
            how += f", opset {meta.opset}"
        batch = "any batch size" if meta.batch is None else f"batch {meta.batch}"
        feed = (
            "uint8 NCHW input, normalisation in the graph"
            if meta.normalised_inside
            else f"{meta.input_dtype} NCHW input, normalised by the client"
        )
        return f"{meta.file_format} ({how}); {batch}; {feed}; {'fp16' if meta.half else 'fp32'}; {meta.output_kind}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "source": self.source,
            "metadata": self.metadata.to_dict(),
            "parity": self.parity.to_dict(),
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def default_export_path(folder: Path, stem: str, settings: ExportSettings) -> Path:
    """`model.onnx`, `model-uint8-fp16.onnx`, `ensemble-static.pt2`, ... inside `folder`."""
    tags = [
        tag
        for tag, on in (("uint8", settings.with_preprocessing), ("fp16", settings.half), ("static", settings.batch))
        if on
    ]
    return folder / ("-".join([stem, *tags]) + get_format(settings.format).suffix)


# -- the public entry points --------------------------------------------------------------------
def export(
    source: str | Path,
    out: str | Path | None = None,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    exist_ok: bool = False,
    reporter: Reporter | str | None = "quiet",
    **settings: Any,
) -> ExportResult:
    """Export a run folder, or an ensemble.json from `fastcls ensemble vote`; `settings` are
    ExportSettings fields (format, opset, exporter, dynamic_batch, with_preprocessing, half,
    parity_images). Default `out`: model.<suffix> in the run folder (ensemble.<suffix> beside
    the ensemble.json). Parity uses `data` (default: what the run was trained or voted on)."""
    from fastcls.api import ImageClassifier
    from fastcls.export.predictors import load_predictor
    from fastcls.studies.ensemble import EnsembleClassifier

    chosen = ExportSettings(**settings)
    target = Path(source).expanduser()
    predictor = load_predictor(target)
    if not isinstance(predictor, ImageClassifier | EnsembleClassifier):
        raise ExportError(f"{target} is already an exported file; export the run folder or ensemble.json it came from.")
    if isinstance(predictor, EnsembleClassifier):
        file = target / "ensemble.json" if target.is_dir() else target
        recorded = json.loads(file.read_text(encoding="utf-8"))
        out = out if out is not None else default_export_path(file.parent, "ensemble", chosen)
        return export_ensemble(
            predictor, out, chosen, data=data or recorded.get("data"), split=split, exist_ok=exist_ok,
            reporter=reporter, source=str(file),
        )  # fmt: skip
    folder = target.parent if target.is_file() else target
    out = out if out is not None else default_export_path(folder, "model", chosen)
    return export_classifier(
        predictor, out, chosen, data=data, split=split, exist_ok=exist_ok, reporter=reporter, source=str(folder)
    )


def export_classifier(
    clf: ImageClassifier,
    out: str | Path,
    settings: ExportSettings | None = None,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    exist_ok: bool = False,
    reporter: Reporter | str | None = "quiet",
    source: str = "(in memory)",
) -> ExportResult:
    """Export a trained ImageClassifier (from `fit` or `fastcls.load`) and check it on real images."""
    settings = settings or ExportSettings()
    if clf.model is None:
        raise RunError("this classifier has not been trained; call fit() or fastcls.load() first.")
    prep = clf.preprocessing
    reference_model = copy.deepcopy(clf.model).cpu().float().eval()
    normalise = Normalise(prep.mean, prep.std)
    graph = ModelGraph(
        copy.deepcopy(reference_model), normalise if settings.with_preprocessing else None, settings.half
    ).eval()
    metadata = _metadata(
        clf.classes, prep, settings, source, clf.config.model.arch, output=("logits", "logits"), mean_std=True
    )
    spec = str(data) if data is not None else clf.config.data.source

    def reference(images: torch.Tensor, paths: list[Path], pieces: list[slice]) -> np.ndarray:
        with torch.inference_mode():  # in the export's own batches: a model may depend on the batch size
            return np.concatenate([reference_model(normalise(images[s])).float().numpy() for s in pieces])

    carve = (clf.config.data.valid_pct, clf.config.train.seed)
    return _export(graph, normalise, prep, metadata, settings, out, spec, carve, split, exist_ok, reporter, reference)


def export_ensemble(
    ensemble: EnsembleClassifier,
    out: str | Path,
    settings: ExportSettings | None = None,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    exist_ok: bool = False,
    reporter: Reporter | str | None = "quiet",
    source: str = "(in memory)",
) -> ExportResult:
    """One graph that runs every member and votes as the ensemble.json does (soft, weighted, geometric).

    Refused when the members cannot share one input: different size, resize, crop or
    interpolation; or different mean/std without `with_preprocessing` (with it, each member
    normalises the shared uint8 input its own way inside the graph).
    """
    settings = settings or ExportSettings()
    if ensemble.method not in EXPORTABLE_VOTES:
        raise ExportError(
            f"this ensemble votes {ensemble.method!r}, whose ties are settled by the preferred member's "
            f"probabilities outside any graph; only {', '.join(EXPORTABLE_VOTES)} votes export as one graph. Vote "
            "again with `fastcls ensemble vote ... --method soft` (or weighted, geometric) and export that."
        )
    members = [m.classifier() for m in ensemble.ensemble.members]
    names = ensemble.ensemble.names
    preps = [m.preprocessing for m in members]
    geometry = {(p.size, p.resize, p.crop_pct, p.interpolation) for p in preps}
    if len(geometry) > 1:
        detail = "; ".join(
            f"{n}: {p.size}px {p.resize} crop_pct {p.crop_pct} {p.interpolation}"
            for n, p in zip(names, preps, strict=True)
        )
        raise ExportError(
            f"the members need different input images ({detail}), so they cannot share one graph input; "
            "export each run on its own, or vote members trained at one size."
        )
    shared_norm = len({(p.mean, p.std) for p in preps}) == 1
    if not shared_norm and not settings.with_preprocessing:
        raise ExportError(
            "the members normalise their input differently (mean/std), so one float input cannot feed them all; "
            "pass --with-preprocessing: the graph then takes uint8 pixels and each member normalises them itself."
        )
    graphs = [
        ModelGraph(
            copy.deepcopy(m.model).cpu().float().eval(),
            Normalise(p.mean, p.std) if settings.with_preprocessing else None,
            settings.half,
        )
        for m, p in zip(members, preps, strict=True)
    ]
    orders = [[m.classes.index(c) for c in ensemble.classes] for m in members]
    graph = EnsembleGraph(graphs, orders, ensemble.method, ensemble.weights, ensemble.tta).eval()
    arch = f"ensemble({ensemble.method}: {', '.join(m.config.model.arch for m in members)})"
    metadata = _metadata(
        ensemble.classes, preps[0], settings, source, arch, output=("probabilities", "probabilities"),
        mean_std=shared_norm,
    )  # fmt: skip
    if data is None:
        raise ExportError("say which images to check the ensemble's export on: pass --data DATA.")

    def reference(images: torch.Tensor, paths: list[Path], pieces: list[slice]) -> np.ndarray:
        scores, kept = ensemble.predict_proba(paths)
        if len(kept) != len(paths):
            raise DataError("some parity images could not be read by every member; pass other --data.")
        return np.asarray(scores, dtype=np.float64)

    first = members[0].config
    carve = (first.data.valid_pct, first.train.seed)
    normalise = Normalise(preps[0].mean, preps[0].std)
    return _export(graph, normalise, preps[0], metadata, settings, out, str(data), carve, split, exist_ok, reporter,
                   reference)  # fmt: skip


# -- the shared path: write to a temporary file, check, keep --------------------------------------
def _metadata(
    classes: list[str],
    prep: Preprocessing,
    settings: ExportSettings,
    source: str,
    arch: str,
    output: tuple[str, str],
    mean_std: bool,
) -> ExportMetadata:
    from fastcls.version import __version__

    dtype = "uint8" if settings.with_preprocessing else ("float16" if settings.half else "float32")
    return ExportMetadata(
        classes=list(classes),
        size=prep.size,
        resize=prep.resize,
        crop_pct=prep.crop_pct,
        interpolation=prep.interpolation,
        mean=list(prep.mean) if mean_std else None,
        std=list(prep.std) if mean_std else None,
        input_name="input",
        input_dtype=dtype,
        batch=settings.batch,
        output_name=output[0],
        output_kind=output[1],
        half=settings.half,
        file_format=settings.format,
        exporter="",
        opset=None,
        source=source,
        arch=arch,
        fastcls_version=__version__,
    )


def _batches(n: int, batch: int | None) -> list[slice]:
    """A single image first (so a dynamic graph is run at batch 1 too), then PARITY_BATCH at a time."""
    if batch is not None:
        return [slice(i, i + batch) for i in range(0, n, batch)]
    return [slice(0, 1)] + [slice(i, min(i + PARITY_BATCH, n)) for i in range(1, n, PARITY_BATCH)]


def _parity_images(
    spec: str, carve: tuple[float, int], split: str | None, prep: Preprocessing, limit: int, reporter: Reporter
) -> tuple[torch.Tensor, list[Path], str, str]:
    """(uint8 images, their paths, data spec, split): the test split, else valid, evenly thinned to `limit`."""
    from fastcls.data.loaders import decode_split
    from fastcls.data.sources import resolve_source

    try:
        source = resolve_source(spec, *carve)
    except FastclsError as exc:
        raise DataError(
            f"the parity check needs real images, but {exc} Pass --data DATA to check on other images."
        ) from None
    split = split or ("test" if "test" in source.splits else "valid")
    if split not in source.splits:
        raise DataError(
            f"{source.spec} has no {split!r} split for the parity check; it has {', '.join(source.splits)}."
        )
    samples = source.split(split)
    if limit and len(samples) > limit:
        samples = [samples[int(i)] for i in np.unique(np.linspace(0, len(samples) - 1, limit).round())]
    decoded = decode_split(samples, source.classes, prep, "skip", reporter, f"decode {split} for parity")
    return decoded.images, decoded.paths, source.spec, split


def _own_error(
    graph: torch.nn.Module, inputs: torch.Tensor, pieces: list[slice], expected: np.ndarray, half: bool
) -> float:
    """How far PyTorch itself is from `expected` at the export's precision: the fp16 graph run eagerly
    (against the fp32 model), or the fp32 graph against the same graph in float64."""
    module = graph if half else copy.deepcopy(graph).double()
    with torch.inference_mode():
        rows = [
            module(inputs[s] if half or inputs.dtype == torch.uint8 else inputs[s].double()).double() for s in pieces
        ]
    return float(np.abs(torch.cat(rows).numpy() - expected).max())


def _publish(tmp: Path, out: Path) -> None:
    """fsync, the usual permissions (mkstemp makes 0600), then one rename: old file or new, never half."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, out)


def _export(
    graph: torch.nn.Module,
    normalise: Normalise,
    prep: Preprocessing,
    metadata: ExportMetadata,
    settings: ExportSettings,
    out: str | Path,
    spec: str,
    carve: tuple[float, int],
    split: str | None,
    exist_ok: bool,
    reporter: Reporter | str | None,
    reference: Callable[[torch.Tensor, list[Path], list[slice]], np.ndarray],
) -> ExportResult:
    start = time.perf_counter()
    fmt = get_format(settings.format)
    report = as_reporter(reporter)
    out = Path(out).expanduser()
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give a file name such as {out / ('model' + fmt.suffix)}.")
    if out.suffix.lower() != fmt.suffix:
        raise ExportError(f"--out {out} should end in {fmt.suffix} for --format {fmt.name}.")
    if out.exists() and not exist_ok:
        raise RunError(f"{out} already exists; choose another --out, or pass --exist-ok to replace it.")
    images, paths, data, split = _parity_images(spec, carve, split, prep, settings.parity_images, report)
    inputs = images if settings.with_preprocessing else normalise(images)
    if settings.half and not settings.with_preprocessing:
        inputs = inputs.half()
    example = inputs[: settings.batch or 2]
    if len(example) < (settings.batch or 2):  # one parity image: a dynamic graph still needs two to stay dynamic
        example = example.repeat(2, 1, 1, 1)
    pieces = _batches(len(inputs), settings.batch)
    expected = reference(images, paths, pieces)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".partial{fmt.suffix}", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    own: list[float] = []  # PyTorch's own error at this precision, measured at most once

    def attempt(chosen: ExportSettings) -> tuple[ExportMetadata, list[str], Parity]:
        report.info(f"exporting to {fmt.name}, then checking it in {fmt.runtime} on {len(images)} {split} images")
        with torch.no_grad():
            written, notes = fmt.write(graph, example, tmp, metadata, chosen)
        run = fmt.runner(tmp)
        outputs = []
        with report.task("parity", len(pieces)) as task:
            for piece in pieces:
                try:
                    outputs.append(np.asarray(run(inputs[piece].numpy()), dtype=np.float64))
                except FastclsError:
                    raise
                except Exception as exc:  # the runtime's own error types (torch RuntimeError, ...)
                    precision = " in fp16 (export without --half)" if chosen.half else ""
                    raise ExportError(
                        f"the exported file does not run in {fmt.runtime}{precision}, so no file was kept: "
                        f"{failure_reason(exc)}"
                    ) from None
                task.advance()
        got = np.concatenate(outputs)
        if not own and np.isfinite(got).all() and np.abs(got - expected).max() > base_tolerance(expected, chosen.half):
            own.append(_own_error(graph, inputs, pieces, expected, chosen.half))
        quantity = "logit" if written.output_kind == "logits" else "probability"
        parity = compare(expected, got, chosen.half, fmt.runtime, data, split, quantity, own[0] if own else None)
        return written, notes, parity

    try:
        metadata, notes, parity = attempt(settings)
        first = ""
        if not parity.passed and metadata.exporter == "dynamo" and (settings.exporter or "auto") == "auto":
            first = f"the dynamo exporter's file failed the parity check ({parity.summary()})"
            try:
                metadata, notes, parity = attempt(replace(settings, exporter="classic"))
            except ExportError as exc:
                raise ExportError(f"{first}; then the classic exporter: {exc}") from None
            notes = [f"{first}; used the classic exporter", *notes]
        if not parity.passed:
            hint = " fp16 changes this model's answers: export it without --half." if settings.half else ""
            before = f" Before that, {first}." if first else ""
            raise ExportError(
                f"the export does not give the model's answers, so no file was kept: {parity.summary()}.{hint}{before}"
            )
        _publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, metadata.source, metadata, parity, notes, time.perf_counter() - start)
