"""fastcls finetune against a hand-written timm + torch loop: same data, model, epochs, LR, batch.

EfficientNet-Lite0 with the packaged ImageNet weights on builtin:digits, AdamW + one-cycle, bs 64,
lr 2e-3, three strategies (head: 2 epochs; freeze-unfreeze: 1 + 2; full: 2) at two sizes, several
seeds. Each run is a fresh process, timed whole (imports, decoding, training, test scoring and,
for fastcls, writing the run folder); the two sides alternate so machine load hits both alike.
The hand loop is benchmarks/hand_finetune.py (no fastcls imports).

Prints one JSON line per run, then a summary per cell: mean test accuracy of each side, the
difference in points and the wall-time ratio fastcls / hand. Done when every cell has
fastcls >= hand - 1 point and the ratio <= 1.3.

Run: .venv/bin/python benchmarks/finetune_vs_hand.py [--sizes 64,96] [--seeds 0,1,2]
     [--strategies head,freeze-unfreeze,full] [-- extra fastcls flags]
"""

from __future__ import annotations

import argparse
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
EPOCHS = {
    "head": ["--epochs", "2"],
    "freeze-unfreeze": ["--freeze-epochs", "1", "--epochs", "2"],
    "full": ["--epochs", "2"],
}


def timed(command: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    text = done.stdout.strip()
    try:
        return seconds, json.loads(text)  # fastcls --json: one indented object
    except json.JSONDecodeError:
        return seconds, json.loads(text.splitlines()[-1])  # the hand loop: one line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64,96")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default="head,freeze-unfreeze,full")
    parser.add_argument("--lr", default="2e-3")
    parser.add_argument("extra", nargs="*", help="extra fastcls flags (after --)")
    args = parser.parse_args()

    from fastcls.data.builtin import builtin_folder, fastcls_home

    folder = fastcls_home() / "datasets" / "digits"
    builtin_folder("digits")  # written once, then read by both sides
    python = sys.executable
    fastcls = [python, "-m", "fastcls"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            for strategy in args.strategies.split(","):
                for seed in args.seeds.split(","):
                    common = ["--size", size, "--bs", "64", "--lr", args.lr, "--seed", seed, *EPOCHS[strategy]]
                    hand_s, hand = timed(
                        [python, str(HERE / "hand_finetune.py"), str(folder), "--strategy", strategy, *common]
                    )
                    out = Path(tmp) / f"{strategy}-{size}-{seed}"
                    flags = ["--arch", "efficientnet_lite0", "--strategy", strategy, *common, "--out", str(out)]
                    ours_s, ours = timed(
                        [*fastcls, "finetune", "builtin:digits", *flags, "--json", "--quiet", *args.extra]
                    )
                    row = {
                        "size": int(size),
                        "strategy": strategy,
                        "seed": int(seed),
                        "fastcls_test": round(ours["test_accuracy"], 4),
                        "hand_test": round(hand["test_accuracy"], 4),
                        "fastcls_seconds": round(ours_s, 2),
                        "hand_seconds": round(hand_s, 2),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    cells = {}
    for row in rows:
        cells.setdefault((row["size"], row["strategy"]), []).append(row)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    summary = []
    for (size, strategy), group in cells.items():
        ours = statistics.mean(r["fastcls_test"] for r in group)
        hand = statistics.mean(r["hand_test"] for r in group)
        ratio = sum(r["fastcls_seconds"] for r in group) / sum(r["hand_seconds"] for r in group)
        summary.append(
            {
                "size": size,
                "strategy": strategy,
                "seeds": len(group),
                "fastcls_test_mean": round(ours, 4),
                "hand_test_mean": round(hand, 4),
                "difference_points": round(100 * (ours - hand), 2),
                "wall_ratio": round(ratio, 3),
                "done": ours >= hand - 0.01 and ratio <= 1.3,
            }
        )
    print(json.dumps({"summary": summary, "machine": machine, "extra_flags": args.extra}, indent=1))


if __name__ == "__main__":
    main()
