"""An exported .onnx predicts like its run: raw uint8 crops, `fastcls predict model.onnx`, fp16, and no torch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import fastcls
from fastcls.cli.app import app
from fastcls.data.images import load_image
from fastcls.export import export, load_onnx

runner = CliRunner(env={"COLUMNS": "250"})  # rich wraps at 80 columns otherwise
ROOT = Path(__file__).resolve().parents[2]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def uint8_onnx(cnn_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "m-uint8.onnx"
    result = invoke("export", cnn_run, "--with-preprocessing", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "dynamo exporter" in result.stdout and "uint8 NCHW input, normalisation in the graph" in result.stdout
    assert "top-1 agreement 100.00% (18/18)" in result.stdout and "passed" in result.stdout
    return out


def test_raw_uint8_crops_through_onnxruntime_give_the_classes_of_fastcls_predict(cnn_run, uint8_onnx, export_data):
    import onnxruntime as ort

    clf = fastcls.load(cnn_run)
    paths = sorted((export_data / "test").rglob("*.png"))
    crops = np.stack([load_image(p, clf.preprocessing) for p in paths])  # what a client's resize/crop gives
    assert crops.dtype == np.uint8 and crops.shape == (18, 3, 16, 16)
    session = ort.InferenceSession(str(uint8_onnx), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    logits = session.run(None, {"input": crops})[0]
    assert [clf.classes[i] for i in logits.argmax(1)] == [p.label for p in clf.predict(paths)]
    props = dict(session.get_modelmeta().custom_metadata_map)
    for key in ("classes", "size", "crop_pct", "interpolation", "mean", "std", "fastcls_version"):
        assert key in props
    assert json.loads(props["classes"]) == clf.classes and json.loads(props["size"]) == 16
    assert json.loads(props["mean"]) == list(clf.preprocessing.mean)


@pytest.mark.parametrize("variant", ["normalised", "uint8"])
def test_predict_csv_of_the_onnx_file_matches_the_run(cnn_run, uint8_onnx, export_data, tmp_path, variant):
    model = uint8_onnx
    if variant == "normalised":
        model = tmp_path / "m.onnx"
        exported = invoke("export", cnn_run, "--out", model, "--exporter", "classic", "--json")
        assert exported.exit_code == 0, exported.output
        report = json.loads(exported.stdout)
        assert report["path"] == str(model) and report["parity"]["passed"] and report["parity"]["n"] == 18
        assert report["metadata"]["exporter"] == "classic" and report["metadata"]["input_dtype"] == "float32"
    images = export_data / "test"
    assert invoke("predict", cnn_run, images, "--out", tmp_path / "run.csv", "--top", "3").exit_code == 0
    result = invoke("predict", model, images, "--out", tmp_path / "onnx.csv", "--top", "3")
    assert result.exit_code == 0, result.output
    want, got = _csv(tmp_path / "run.csv"), _csv(tmp_path / "onnx.csv")
    assert len(want) == len(got) == 18 and list(want[0]) == list(got[0])
    for a, b in zip(want, got, strict=True):
        assert [a["path"], a["label"], a["top1"], a["top2"], a["top3"]] == [
            b["path"], b["label"], b["top1"], b["top2"], b["top3"]
        ]  # fmt: skip
        for column in ("probability", "top1_probability", "top2_probability", "top3_probability"):
            assert abs(float(a[column]) - float(b[column])) <= 2e-6  # the CSV's 6 decimals, ±1 in the last


@pytest.mark.slow
def test_a_cropping_model_carries_the_runs_own_preprocessing_and_predicts_like_it(lite0_run, tmp_path):
    """EfficientNet-Lite0 resizes the short side to floor(32 / 0.875) = 36 bicubic and centre-crops 32 (timm's
    eval transform): the file's metadata is model.json's preprocessing, and odd-shaped photos give the run's answers."""
    from PIL import Image

    card = json.loads((lite0_run / "model.json").read_text())
    run_prep = fastcls.load(lite0_run).preprocessing
    assert run_prep.resize == "crop" and run_prep.crop_pct == pytest.approx(0.875) and run_prep.size == 32
    result = export(lite0_run, tmp_path / "lite0.onnx", with_preprocessing=True, exporter="classic")
    meta = result.metadata
    assert meta.preprocessing() == run_prep and meta.preprocessing().to_dict() == card["preprocessing"]
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (w, h) in enumerate([(53, 37), (29, 61), (120, 45), (33, 33)]):  # short side up- and down-scaled
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    assert invoke("predict", lite0_run, photos, "--out", tmp_path / "run.csv", "--top", "3").exit_code == 0
    assert invoke("predict", result.path, photos, "--out", tmp_path / "onnx.csv", "--top", "3").exit_code == 0
    want, got = _csv(tmp_path / "run.csv"), _csv(tmp_path / "onnx.csv")
    assert len(want) == len(got) == 4
    for a, b in zip(want, got, strict=True):
        assert (a["path"], a["label"], a["top1"], a["top2"]) == (b["path"], b["label"], b["top1"], b["top2"])
        assert abs(float(a["probability"]) - float(b["probability"])) <= 1e-5


def test_onnx_predict_runs_without_torch(cnn_run, uint8_onnx, export_data):
    """A deployment with onnxruntime, numpy and Pillow only: torch cannot even be imported here."""
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from fastcls.cli.app import main\n"
        f"sys.argv = ['fastcls', 'predict', {str(uint8_onnx)!r}, {str(export_data / 'test')!r}, '--json']\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    want = fastcls.load(cnn_run).predict([Path(row["path"]) for row in rows])
    assert len(rows) == 18 and [row["label"] for row in rows] == [p.label for p in want]
    assert load_onnx(uint8_onnx).classes == fastcls.load(cnn_run).classes


def test_half_export_checks_with_the_stated_fp16_tolerance(cnn_run, export_data, tmp_path):
    result = export(cnn_run, tmp_path / "m.onnx", half=True, exporter="classic")
    parity = result.parity
    assert parity.passed and result.metadata.input_dtype == "float16" and result.metadata.half
    assert 0 < parity.max_abs_diff <= parity.tolerance  # fp16 really ran: not bit-equal to fp32
    assert parity.tolerance >= 1e-2 and "fp16" in parity.rule
    clf = load_onnx(result.path)
    assert clf.session.get_inputs()[0].type == "tensor(float16)"
    paths = sorted((export_data / "test").rglob("*.png"))
    fp32 = [p.label for p in fastcls.load(cnn_run).predict(paths)]
    assert [p.label for p in clf.predict(paths)] == fp32


def test_a_file_without_fastcls_metadata_is_refused_clearly(tmp_path, export_data):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "plain.onnx")
    result = runner.invoke(app, ["predict", str(tmp_path / "plain.onnx"), str(export_data / "test")])
    assert result.exit_code == 1
    assert "was not written by `fastcls export`" in result.stderr and "Traceback" not in result.output
