"""The examples/ scripts run, with tiny settings (FASTCLS_EXAMPLE_TINY=1), as a user would start them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "examples"
# One interpreter runs them all (runpy, each as __main__): five fresh imports of torch would cost ~20 s.
DRIVER = """
import runpy, sys, traceback
for path in sys.argv[1:]:
    print(f"=== {path}", flush=True)
    sys.argv = [path]
    try:
        runpy.run_path(path, run_name="__main__")
        print(f"=== ok {path}", flush=True)
    except BaseException:
        traceback.print_exc(file=sys.stdout)
"""


def test_every_example_is_short_and_runs_with_tiny_settings(tmp_path):
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert {p.stem for p in scripts} >= {"finetune_folder", "train_cnn", "vote_ensemble", "sensitivity", "sweep"}
    for script in scripts:
        assert len(script.read_text().splitlines()) <= 40, f"{script.name} is longer than 40 lines"
    env = os.environ | {"FASTCLS_EXAMPLE_TINY": "1"}
    done = subprocess.run([sys.executable, "-c", DRIVER, *map(str, scripts)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)  # fmt: skip
    out = done.stdout
    failed = [p.name for p in scripts if f"=== ok {p}" not in out]
    assert not failed, f"examples failed: {failed}\n{out[-4000:]}\n{done.stderr[-2000:]}"
    assert "test accuracy" in out and "hard vote" in out and "grad-norm:" in out and "fastcls run" in out
    assert "valid accuracy" in out and "predicted" in out
    assert not (tmp_path / "runs").exists()  # tiny mode writes to temporary folders only
