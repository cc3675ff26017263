"""`fastcls pretrain` on the command line: a run folder fine-tuning takes, resume rules, signals, and one-line
errors for the inputs people get wrong (no labels to probe, one image, corrupt images, a mistyped method)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from fastcls.cli.app import app
from tests_support import digit_images

runner = CliRunner()
TINY = ["--blocks", "2", "--filters", "8", "--dense", "16", "--hidden-dim", "32", "--size", "8", "--bs", "8"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _flat_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    images, _ = digit_images(per_class=max(1, n // 4 + 1), classes=4)
    for i, pixels in enumerate(images[:n]):
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return folder


def test_pretrain_json_then_finetune_from_it_and_repeat_with_run(tmp_path, class_folders):
    out = tmp_path / "ssl"
    result = invoke("pretrain", class_folders, *TINY, "--epochs", "2", "--out", out, "--json", "--opt", "adamw")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run"] == str(out) and summary["method"] == "byol" and summary["epochs"] == 2
    assert summary["probe"]["kind"] == "knn" and 0 <= summary["probe"]["accuracy"] <= 1
    assert summary["probe_start"]["valid"] == summary["probe"]["valid"] == 16  # 4 classes x 20, 20% held out
    tuned = invoke("finetune", class_folders, "--arch", "cnn", "--weights", out, "--strategy", "head", "--epochs", "1",
                   "--out", tmp_path / "ft", "--json")  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert 0 <= json.loads(tuned.stdout)["accuracy"] <= 1
    refused = invoke("evaluate", out)
    assert refused.exit_code == 1 and "backbone without a classifier" in refused.stderr
    assert f"fastcls finetune DATA --arch cnn --weights {out}" in refused.stderr
    repeat = invoke("run", out / "config.toml", "--name", "again", "--quiet")
    assert repeat.exit_code == 0, repeat.output
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_resume_rules(tmp_path, class_folders):
    out = tmp_path / "r"
    result = invoke("pretrain", class_folders, *TINY, "--epochs", "2", "--probe", "none", "--out", out,
                    "--stop-after", "1", "--json")  # fmt: skip
    assert result.exit_code == 0 and json.loads(result.stdout)["stopped"] == "stop-after"
    result = invoke("pretrain", "--resume", out, "--epochs", "9")
    assert result.exit_code == 1 and "drop --epochs" in result.stderr
    result = invoke("pretrain", "--resume", out, "--stop-after", "1")
    assert result.exit_code == 1 and "--stop-after 1 is not after epoch 1" in result.stderr
    result = invoke("train", "--resume", out)
    assert result.exit_code == 1 and "fastcls pretrain --resume" in result.stderr
    result = invoke("pretrain", "--resume", out, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["epochs"] == 2
    result = invoke("pretrain", "--resume", out)
    assert result.exit_code == 1 and "nothing to resume" in result.stderr
    result = invoke("pretrain", "--epochs", "1")
    assert result.exit_code == 1 and "DATA is missing" in result.stderr


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("method", "method 'byl' is not one of byol, simsiam, simclr. Did you mean: byol?"),
        ("probe-unlabeled", "has no labels (a folder of images without class folders), so --probe knn"),
        ("probe-typo", "probe 'knm' is not one of knn, linear, none"),
        ("one-image", "has 1 readable image; self-supervised pretraining compares images"),
        ("all-corrupt", "none of the 3 images in"),
        ("corrupt-error", "unreadable image(s), first:"),
        ("empty", "holds no images"),
        ("finetune-unlabeled", "has no images in class folders"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, case, message):
    data = _flat_folder(tmp_path / "images", 12)
    args = ["pretrain", data, *TINY, "--epochs", "1", "--out", tmp_path / "out"]
    if case == "method":
        args += ["--method", "byl"]
    elif case == "probe-unlabeled":
        args += ["--probe", "knn"]
    elif case == "probe-typo":
        args += ["--probe", "knm"]
    elif case == "one-image":
        args[1] = _flat_folder(tmp_path / "one", 1)
    elif case in ("all-corrupt", "corrupt-error"):
        bad = tmp_path / "bad"
        bad.mkdir()
        for i in range(3):
            (bad / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        if case == "corrupt-error":
            (data / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
            args += ["--on-bad-image", "error"]
        else:
            args[1] = bad
    elif case == "empty":
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        args[1] = tmp_path / "empty"
    elif case == "finetune-unlabeled":
        args = ["finetune", data, "--arch", "cnn", "--epochs", "1", "--out", tmp_path / "out"]
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_corrupt_images_are_skipped_with_a_count(tmp_path):
    data = _flat_folder(tmp_path / "images", 12)
    for i in range(2):
        (data / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    result = invoke("pretrain", data, *TINY, "--epochs", "1", "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    assert "skipped 2 unreadable image(s)" in result.stderr
    card = json.loads((tmp_path / "out" / "model.json").read_text())
    assert card["metrics"]["skipped_images"] == 2 and card["probe"] is None


def test_sigterm_to_the_cli_saves_a_resumable_run_and_exits_130(tmp_path, class_folders):
    out = tmp_path / "r"
    args = ["pretrain", str(class_folders), *TINY, "--epochs", "500", "--probe", "none", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "fastcls", *args], stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # the epoch table: header, then one row per epoch
        if line.split() and line.split()[0] == "1":
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "SIGTERM after epoch" in stderr and "fastcls pretrain --resume" in stderr
    card = json.loads((out / "model.json").read_text())
    assert card["stopped"] == "SIGTERM" and 1 <= card["epochs"] < 500
    assert (out / "checkpoints" / "resume.pt").is_file()
