"""Each model exports to each format, and the file, reloaded in its own runtime, gives the model's logits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import fastcls
from fastcls.data.loaders import Batches, decode_split
from fastcls.data.sources import resolve_source
from fastcls.errors import ExportError
from fastcls.export import FORMATS, export, read_metadata

SLOW = pytest.mark.slow
CASES = [
    ("cnn_run", "onnx", None),  # auto: the dynamo exporter
    ("cnn_run", "exported-program", None),
    ("cnn_run", "torchscript", None),
    pytest.param("lite0_run", "onnx", "classic", marks=SLOW),  # dynamo works too (checked): ~20 s more on 2 cores
    pytest.param("lite0_run", "exported-program", None, marks=SLOW),
    pytest.param("lite0_run", "torchscript", None, marks=SLOW),
    pytest.param("resnet_run", "onnx", "dynamo", marks=SLOW),
    pytest.param("resnet_run", "exported-program", None, marks=SLOW),
    pytest.param("resnet_run", "torchscript", None, marks=SLOW),
]


def _test_inputs(run: Path):
    """The run's model, and its test images normalised as training did."""
    clf = fastcls.load(run)
    source = resolve_source(clf.config.data.source)
    decoded = decode_split(source.split("test"), source.classes, clf.preprocessing)
    batches = Batches(decoded, clf.preprocessing, 256)
    return clf, batches.normalise(decoded.images)


@pytest.mark.parametrize(("fixture", "fmt", "exporter"), CASES)
def test_export_reload_and_parity_on_real_images(request, tmp_path, fixture, fmt, exporter):
    run = request.getfixturevalue(fixture)
    out = tmp_path / f"exported{FORMATS[fmt].suffix}"
    result = export(run, out, format=fmt, exporter=exporter)
    parity = result.parity
    assert parity.passed and parity.split == "test" and parity.n == 18, parity
    assert parity.agreement == 1.0 and parity.max_abs_diff <= 1e-4, parity
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left behind

    clf, x = _test_inputs(run)
    meta = read_metadata(out)
    prep = clf.preprocessing
    assert meta.classes == clf.classes and meta.size == prep.size and meta.crop_pct == prep.crop_pct
    assert meta.mean == list(prep.mean) and meta.std == list(prep.std) and meta.interpolation == prep.interpolation
    assert meta.fastcls_version == fastcls.__version__ and meta.file_format == fmt and meta.batch is None
    assert meta.exporter == {"onnx": exporter or "dynamo"}.get(fmt, result.metadata.exporter)

    run_file = FORMATS[fmt].runner(out)  # independently of the parity check: load it back and compare
    with torch.no_grad():
        want = clf.model.cpu().eval()(x).numpy()
    got = np.concatenate([run_file(x[:1].numpy()), run_file(x[1:].numpy())])  # batch 1 and batch 17
    assert got.shape == want.shape
    assert (got.argmax(1) == want.argmax(1)).all()
    assert np.abs(got - want).max() <= 1e-4


def test_static_onnx_takes_batch_one_and_says_so(cnn_run, tmp_path):
    result = export(cnn_run, tmp_path / "m.onnx", dynamic_batch=False, exporter="classic")
    assert result.metadata.batch == 1 and result.parity.passed
    import onnxruntime as ort

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 16, 16]
    assert "batch 1" in result.describe() and "classic exporter" in result.describe()


def test_default_names_sit_in_the_run_folder(cnn_run):
    result = export(cnn_run, format="exported-program", with_preprocessing=True, exist_ok=True)
    assert result.path == cnn_run / "model-uint8.pt2" and result.path.is_file()
    assert read_metadata(result.path).input_dtype == "uint8"
    result.path.unlink()


@pytest.mark.slow
def test_a_model_noisier_than_1e4_in_fp32_gets_four_times_its_own_rounding_error(lite0_refitted_bn_run, tmp_path):
    clf, x = _test_inputs(lite0_refitted_bn_run)
    model = clf.model.cpu().eval()
    with torch.no_grad():  # in the parity check's batches (1 image, then the other 17): conv kernels differ by batch
        fp32 = torch.cat([model(x[:1]), model(x[1:])]).double()
        noise = (fp32 - model.double()(x.double())).abs().max().item()
    assert len(x) <= 33 and noise > 2.5e-5  # so 4 × noise is over the 1e-4 floor: this run is the case the rule is for
    result = export(lite0_refitted_bn_run, tmp_path / "m.onnx", exporter="classic")
    parity = result.parity
    assert parity.passed and parity.agreement == 1.0
    assert parity.own_error == pytest.approx(noise, rel=0.05)
    assert parity.tolerance == pytest.approx(4 * noise, rel=0.05)
    assert parity.max_abs_diff <= parity.tolerance and "own fp32 rounding error" in parity.summary()


@pytest.mark.slow
def test_half_lite0_is_held_to_twice_pytorchs_own_fp16_error(lite0_run, tmp_path):
    result = export(lite0_run, tmp_path / "m.onnx", half=True, exporter="classic")
    parity = result.parity
    assert parity.passed and parity.half and 0 < parity.max_abs_diff <= parity.tolerance
    assert parity.agreeing + parity.near_ties == parity.n
    if parity.own_error is not None:  # over 1 % of the logit scale, as measured: 2.5 % (onnxruntime 1.32, CPU)
        assert parity.tolerance == pytest.approx(2 * parity.own_error) and "own fp16 run" in parity.summary()


def test_fp16_that_changes_a_models_answers_is_refused(cnn_run, tmp_path):
    """A classifier whose logits pass fp16's largest number (65504) has none left in half precision, on
    any CPU. (A model that fp16 merely rounds differently is refused on some CPUs and not on others:
    the tolerance follows PyTorch's own fp16 error there, and the export's error moves with it.)"""
    from safetensors.torch import load_file, save_file

    run = tmp_path / "loud"
    shutil.copytree(cnn_run, run)
    state = load_file(run / "model.safetensors")
    for name in ("head.out.weight", "head.out.bias"):  # the cnn's classifier: logits of about 1e7
        state[name] = state[name] * 1e7
    save_file(state, str(run / "model.safetensors"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError) as caught:
        export(run, out / "m.onnx", half=True, exporter="classic")
    assert "fp16 changes this model's answers: export it without --half" in str(caught.value)
    assert list(out.iterdir()) == []
    assert export(run, out / "m.onnx", exporter="classic").parity.passed  # fp32 keeps them
