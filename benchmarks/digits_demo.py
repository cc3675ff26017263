"""The README demo end to end as a process, against a hand-written script doing the same job.

Both start a fresh Python, read the builtin:digits PNGs, train the same 3-block CNN at 16 px with
builtin:digits's recipe (20 epochs, light augmentation, label smoothing 0.1, weight decay 0.05) and score the test
split; the demo also writes its run folder (model, metrics, plot, report). Three seeds each,
interleaved. Prints JSON with accuracies, wall times and the ratio.
Run: .venv/bin/python benchmarks/digits_demo.py
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO = [
    "train",
    "builtin:digits",
]  # its recipe: 16 px, 3 blocks of 64 filters, 20 epochs, aug light, smoothing 0.1, wd 0.05


def timed(command: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(out.stdout)


def main() -> None:
    from fastcls.data.sources import resolve_source

    digits = resolve_source("builtin:digits").split("train")[0].path.parents[2]  # writes the cache once
    fastcls_bin = str(Path(sys.executable).with_name("fastcls"))
    rows = {"fastcls": [], "hand": []}
    with tempfile.TemporaryDirectory() as runs:
        for seed in (1, 2, 3):
            out = str(Path(runs) / f"seed{seed}")
            wall, result = timed([fastcls_bin, *DEMO, "--seed", str(seed), "--out", out, "--quiet", "--json"])
            rows["fastcls"].append((wall, result["test_accuracy"]))
            wall, result = timed([sys.executable, str(HERE / "hand_digits.py"), str(digits), str(seed)])
            rows["hand"].append((wall, result["test_accuracy"]))
    summary = {
        name: {
            "test_accuracy_mean": round(statistics.mean(a for _, a in values), 4),
            "test_accuracies": [round(a, 4) for _, a in values],
            "wall_s_median": round(statistics.median(w for w, _ in values), 2),
        }
        for name, values in rows.items()
    }
    print(
        json.dumps(
            {
                "benchmark": "digits_demo",
                "command": "fastcls " + " ".join(DEMO),
                **summary,
                "wall_ratio_fastcls_over_hand": round(
                    summary["fastcls"]["wall_s_median"] / summary["hand"]["wall_s_median"], 2
                ),
                "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
