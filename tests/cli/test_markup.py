"""User text is never read as rich markup: brackets in paths, class and file names print as they are."""

from __future__ import annotations

import io

from typer.testing import CliRunner

import fastcls
from fastcls.cli.app import app
from fastcls.reporting import Reporter
from tests_support import write_class_folders

runner = CliRunner(env={"COLUMNS": "400"})  # wide enough that rich never wraps a path


def _data(tmp_path):
    """`photos [2023]/[/x]/` (a closing tag that would raise) with classes `[bold]zero`, `one]` and a bad
    `[bad].png`."""
    root = tmp_path / "photos [2023]" / "[" / "x]"
    write_class_folders(root, per_class=12, classes=2)
    (root / "0").rename(root / "[bold]zero")
    (root / "1").rename(root / "one]")
    (root / "[bold]zero" / "[bad].png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return root


def test_data_check_train_and_predict_print_bracketed_names_as_they_are(tmp_path):
    data = _data(tmp_path)
    bad = data / "[bold]zero" / "[bad].png"
    check = runner.invoke(app, ["data", "check", str(data)])
    assert check.exit_code == 0, check.output
    assert str(data) in check.stdout and "[bold]zero" in check.stdout and "one]" in check.stdout
    assert f"unreadable: {bad}" in check.stdout

    out = tmp_path / "runs [a]" / "[" / "b]"
    train = runner.invoke(
        app, ["train", str(data), "--blocks", "2", "--filters", "8", "--epochs", "1", "--out", str(out)]
    )
    assert train.exit_code == 0, train.output
    assert str(bad) in train.stderr  # the unreadable-image warning
    assert f"run saved to {out}" in train.stdout

    image = data / "one]" / "0012.png"
    predict = runner.invoke(app, ["predict", str(out), str(image)])
    assert predict.exit_code == 0, predict.output
    assert str(image) in predict.stdout and "one]" in predict.stdout
    listed = runner.invoke(app, ["runs", "ls", str(out.parent)])
    assert listed.exit_code == 0 and "b]" in listed.stdout


def test_rich_progress_and_warnings_keep_brackets(tmp_path):
    data = _data(tmp_path)
    stream = io.StringIO()
    config = fastcls.Config().merged(
        fastcls.Config.nest({"source": str(data), "blocks": 2, "filters": 8, "epochs": 1, "out": str(tmp_path / "r")})
    )
    fastcls.train_run(config, reporter=Reporter("rich", stream=stream))
    shown = stream.getvalue().replace("\n", "")
    assert str(data / "[bold]zero" / "[bad].png") in shown
