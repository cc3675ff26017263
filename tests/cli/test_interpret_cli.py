"""`fastcls interpret`: --only selects plots, --json lists the files, a bad name is one line and exit 1."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from fastcls.cli.app import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_only_selects_plots_and_json_lists_the_files(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    result = invoke("interpret", run, "--split", "valid", "--only", "grid,confusion", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload["files"]) == {"confusion", "grid"} and payload["split"] == "valid" and payload["n"] == 179
    files = [f for paths in payload["files"].values() for f in paths]
    assert sorted(p.name for p in (run / "plots").iterdir() if p.name != "curves.png") == sorted(
        f.rsplit("/", 1)[-1] for f in files
    )
    assert "## Interpretation" in (run / "report.md").read_text()

    plain = invoke("interpret", run, "--split", "valid", "--only", "confusion_pairs", "--quiet")
    assert plain.exit_code == 0 and "wrote 2 files (confusion_pairs)" in plain.stdout


def test_unknown_plot_is_one_line_with_the_choices(trained_run):
    result = invoke("interpret", trained_run, "--only", "confusion,cams")
    assert result.exit_code == 1 and result.stderr.startswith("error: unknown plot 'cams'")
    assert "confusion, classification_report, confusion_pairs, top_losses" in result.stderr
    assert "Did you mean: cam" in result.stderr and "Traceback" not in result.stderr


def test_embed_every_during_training_feeds_the_per_epoch_pca(tmp_path, class_folders):
    from PIL import Image

    out = tmp_path / "r"
    args = ["train", class_folders, "--blocks", "2", "--filters", "8", "--epochs", "3", "--embed-every", "2"]
    assert invoke(*args, "--out", out, "-q").exit_code == 0
    assert sorted(p.name for p in (out / "embeddings").iterdir()) == ["epoch-002.safetensors", "epoch-003.safetensors"]
    result = invoke("interpret", out, "--only", "pca", "--json")
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]["pca"]
    assert any(f.endswith("pca_epochs.png") for f in files)
    assert Image.open(out / "plots" / "pca_epochs.png").size[0] > 400
