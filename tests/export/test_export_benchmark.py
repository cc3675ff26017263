"""benchmarks/export_latency.py keeps running: a tiny run that prints its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_export_latency_benchmark_runs_and_reports_ratios():
    script = ROOT / "benchmarks" / "export_latency.py"
    args = ["--size", "16", "--batches", "1,2", "--models", "cnn", "--repeats", "1", "--warmup", "0"]
    done = subprocess.run([sys.executable, str(script), *args, "--exporter", "classic"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    timings = result["results"]["digits cnn (3 blocks x 64 filters, 10 classes)"]
    assert set(timings) == {"1", "2"} and result["onnx_exporter"] == {"cnn": "classic"}
    for batch in timings.values():
        assert set(batch["ratio_vs_eager"]) == {"eager", "onnxruntime", "exported_program"}
        assert batch["ratio_vs_eager"]["eager"] == 1.0 and all(v > 0 for v in batch["ms_per_batch"].values())
