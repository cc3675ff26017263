"""Exports that must not happen end with one clear message and leave no file (and an existing file as it was)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastcls
from fastcls.errors import ConfigError, ExportError, RunError
from fastcls.export import ExportSettings, export, export_classifier


class WithSvd(nn.Module):
    """The trained model plus a term from torch.linalg.svdvals, which ONNX has no operator for."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        singular = torch.linalg.svdvals(x[:, 0, :4, :4]).sum(-1, keepdim=True)
        return self.inner(x) + 0.0 * singular


class SignByBatch(nn.Module):
    """Python control flow on the batch size: a trace records the branch of its example batch only."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return out if x.shape[0] > 1 else -out


def _no_files(folder):
    return sorted(p.name for p in folder.iterdir()) == []


def test_an_operator_onnx_lacks_fails_both_exporters_with_one_message_and_no_file(cnn_run, tmp_path):
    clf = fastcls.load(cnn_run)
    clf.model = WithSvd(clf.model)
    with pytest.raises(ExportError) as caught:
        export_classifier(clf, tmp_path / "m.onnx")
    message = str(caught.value)
    assert "\n" not in message and "cannot be exported to ONNX" in message
    assert "dynamo exporter failed" in message and "classic exporter failed" in message and "svd" in message
    assert "--format exported-program" in message
    assert _no_files(tmp_path)
    # what the message suggests works: torch.export handles svdvals, and parity passes
    result = export_classifier(clf, tmp_path / "m.pt2", ExportSettings(format="exported-program"))
    assert result.parity.passed and result.parity.agreement == 1.0


def test_a_trace_that_disagrees_with_the_model_is_not_kept_and_the_old_file_stays(cnn_run, tmp_path):
    clf = fastcls.load(cnn_run)
    clf.model = SignByBatch(clf.model)
    out = tmp_path / "m.torchscript"
    out.write_bytes(b"the user's earlier export")
    with pytest.raises(ExportError) as caught:
        export_classifier(clf, out, ExportSettings(format="torchscript"), exist_ok=True)
    message = str(caught.value)
    assert "\n" not in message and "does not give the model's answers, so no file was kept" in message
    assert "FAILED" in message and "top-1 agreement" in message
    assert out.read_bytes() == b"the user's earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.torchscript"]
    # torch 2.14's torch.export also keeps only the example's branch (batch 2) without complaint; parity catches it
    with pytest.raises(ExportError, match="does not give the model's answers"):
        export_classifier(clf, tmp_path / "m.pt2", ExportSettings(format="exported-program"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.torchscript"]


def test_onnx_auto_tries_classic_when_dynamos_file_fails_parity_and_reports_both(cnn_run, tmp_path):
    clf = fastcls.load(cnn_run)
    clf.model = SignByBatch(clf.model)
    with pytest.raises(ExportError) as caught:
        export_classifier(clf, tmp_path / "m.onnx")
    message = str(caught.value)
    assert "\n" not in message and "so no file was kept: parity in onnxruntime" in message
    assert "Before that, the dynamo exporter's file failed the parity check" in message
    assert list(tmp_path.iterdir()) == []


def test_auto_falls_back_to_the_classic_exporter_and_says_why(cnn_run, tmp_path):
    """Control flow on a tensor value stops torch.export (so dynamo); the classic exporter traces it."""

    class AlwaysTrue(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            return out if bool(out.abs().sum() >= 0) else -out

    clf = fastcls.load(cnn_run)
    clf.model = AlwaysTrue(clf.model)
    result = export_classifier(clf, tmp_path / "m.onnx")
    assert result.metadata.exporter == "classic" and result.parity.passed
    assert len(result.notes) == 1 and "the dynamo exporter failed" in result.notes[0]
    assert "used the classic exporter" in result.notes[0]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"format": "tflite"}, "--format 'tflite' is not one of onnx, exported-program, torchscript"),
        ({"format": "torchscript", "opset": 17}, "--opset is for --format onnx"),
        ({"format": "exported-program", "exporter": "classic"}, "--exporter is for --format onnx"),
        ({"format": "torchscript", "dynamic_batch": False}, "a TorchScript trace takes any batch size"),
        ({"exporter": "fast"}, "--exporter 'fast' is not one of auto, dynamo, classic"),
        ({"opset": 3}, "--opset 3 is not an ONNX opset"),
    ],
)
def test_settings_that_do_not_apply_are_refused(settings, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        ExportSettings(**settings)


def test_an_existing_file_needs_exist_ok_and_the_suffix_must_match(cnn_run, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_text("keep")
    with pytest.raises(RunError, match="already exists; choose another --out, or pass --exist-ok"):
        export(cnn_run, out)
    with pytest.raises(ExportError, match=r"should end in \.pt2 for --format exported-program"):
        export(cnn_run, tmp_path / "m.onnx2", format="exported-program")
    assert out.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
