"""Benchmarks are not tests, but they must keep running: a tiny run of each that prints JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_overhead_benchmark_runs_and_reports_a_ratio():
    args = [sys.executable, str(ROOT / "benchmarks/train_overhead.py"), "--size", "8", "--epochs", "2", "--rounds", "1"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert result["ratio_fastcls_over_hand"] > 0 and result["epochs_timed"] == 1


def test_data_pipeline_benchmark_runs_and_reports_ratios(tmp_path):
    args = [sys.executable, str(ROOT / "benchmarks/data_pipeline.py"), "--images", "24", "--size", "32", "--bs", "4"]
    args += ["--workers", "0", "--folder", str(tmp_path), "--no-rss"]
    result = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    assert set(result["images_per_second"]) == {"yardstick", "stream", "memory"}
    assert result["ratio_stream_over_yardstick"] > 0 and result["ratio_memory_over_yardstick"] > 0
    assert result["per_image_split"]["stream_decode_ms"] > 0 and len(list(tmp_path.rglob("*.jpg"))) == 24
