"""An ensemble.json exports as one graph that votes like `fastcls predict ensemble.json`, or is refused clearly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastcls.cli.app import app
from fastcls.export import export, read_metadata
from tests_support import write_class_folders

runner = CliRunner(env={"COLUMNS": "250"})


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def second_cnn(tmp_path_factory, export_data, make_run) -> Path:
    cnn = {"cnn": {"blocks": 2, "filters": 12, "dense": 32}}
    return make_run(tmp_path_factory.mktemp("export-runs") / "cnn-b", export_data, "cnn", 16, seed=1, model=cnn)


def _vote(tmp_path: Path, runs: list[Path], data: Path, *extra: str) -> Path:
    result = invoke("ensemble", "vote", *runs, "--data", data, "--out", tmp_path / "vote", "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return tmp_path / "vote" / "ensemble.json"


def test_a_soft_vote_of_two_cnns_exports_and_predicts_like_the_ensemble_json(
    cnn_run, second_cnn, export_data, tmp_path
):
    ensemble = _vote(tmp_path, [cnn_run, second_cnn], export_data, "--method", "soft")
    result = invoke("export", ensemble, "--quiet")
    assert result.exit_code == 0, result.output
    onnx_file = ensemble.parent / "ensemble.onnx"
    assert f"-> {onnx_file}" in result.stdout and "probabilities" in result.stdout
    assert "on 18 test images" in result.stdout and "top-1 agreement 100.00% (18/18)" in result.stdout
    meta = read_metadata(onnx_file)
    assert meta.output_kind == "probabilities" and meta.arch == "ensemble(soft: cnn, cnn)" and meta.size == 16

    test = export_data / "test"
    assert invoke("predict", ensemble, test, "--out", tmp_path / "json.csv").exit_code == 0
    assert invoke("predict", onnx_file, test, "--out", tmp_path / "onnx.csv").exit_code == 0
    want, got = _csv(tmp_path / "json.csv"), _csv(tmp_path / "onnx.csv")
    assert [r["path"] for r in want] == [r["path"] for r in got] and len(got) == 18
    assert [r["label"] for r in want] == [r["label"] for r in got]
    assert [r["top2"] for r in want] == [r["top2"] for r in got]
    assert max(abs(float(a["probability"]) - float(b["probability"])) for a, b in zip(want, got, strict=True)) <= 2e-6


def test_geometric_vote_with_tta_and_preprocessing_exports_as_a_program(cnn_run, second_cnn, export_data, tmp_path):
    ensemble = _vote(tmp_path, [cnn_run, second_cnn], export_data, "--method", "geometric", "--tta")
    result = export(ensemble, format="exported-program", with_preprocessing=True)
    assert result.path == ensemble.parent / "ensemble-uint8.pt2"
    assert result.parity.passed and result.parity.agreement == 1.0 and result.parity.max_abs_diff <= 1e-4
    assert result.metadata.input_dtype == "uint8" and result.parity.quantity == "probability"


def test_a_hard_vote_is_refused_with_one_line_and_no_file(cnn_run, second_cnn, export_data, tmp_path):
    ensemble = _vote(tmp_path, [cnn_run, second_cnn], export_data)  # hard is the default method
    result = invoke("export", ensemble, "--quiet")
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this ensemble votes 'hard'")
    assert "--method soft" in lines[0]
    assert sorted(p.name for p in ensemble.parent.iterdir()) == ["ensemble.json", "predictions.csv"]


def test_members_that_need_different_inputs_are_refused(cnn_run, tmp_path, export_data, make_run):
    small = make_run(tmp_path / "cnn8", export_data, "cnn", 8, model={"cnn": {"blocks": 2, "filters": 4, "dense": 16}})
    ensemble = _vote(tmp_path, [cnn_run, small], export_data, "--method", "soft")
    result = invoke("export", ensemble, "--quiet")
    assert result.exit_code == 1
    assert "need different input images" in result.stderr and "cnn8: 8px" in result.stderr
    assert "cnn: 16px" in result.stderr and not (ensemble.parent / "ensemble.onnx").exists()


def test_members_that_normalise_differently_need_with_preprocessing(cnn_run, tmp_path, make_run):
    other = tmp_path / "other"  # the same images, darker: other channel statistics
    for split, per_class, start in (("train", 20, 0), ("val", 5, 20), ("test", 6, 25)):
        write_class_folders(other / split, per_class=per_class, classes=3, start=start)
    for png in other.rglob("*.png"):
        from PIL import Image

        Image.eval(Image.open(png), lambda v: v // 2).save(png)
    darker = make_run(tmp_path / "dark", other, "cnn", 16, model={"cnn": {"blocks": 2, "filters": 8, "dense": 32}})
    ensemble = _vote(tmp_path, [cnn_run, darker], other, "--method", "soft")
    refused = invoke("export", ensemble, "--quiet")
    assert refused.exit_code == 1 and "pass --with-preprocessing" in refused.stderr
    result = export(ensemble, with_preprocessing=True, exporter="classic")
    assert result.parity.passed and result.metadata.mean is None  # each member normalises inside the graph
