"""Batch-preparation workers (`--workers`) on this machine: epoch time of one training setup with
0, 1, 2 and 4 workers preparing batches ahead of the model (threads for un-augmented in-memory
batches; DataLoader processes when images are augmented one by one, as with the default `--aug standard`).

Prints JSON: seconds per epoch (median over epochs 2..E of each setting, interleaved rounds),
the ratio of each against 0 workers, and the machine. The default of `--workers` is the fastest here.
Run: .venv/bin/python benchmarks/workers.py [--size 32] [--aug standard] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

import torch

import fastcls


def epoch_seconds(workers: int, args: argparse.Namespace) -> list[float]:
    settings = {"source": "builtin:digits", "size": args.size, "blocks": 3, "filters": 32, "epochs": args.epochs}
    settings |= {"aug": args.aug, "workers": workers, "bs": args.bs}
    clf = fastcls.ImageClassifier.from_config(fastcls.Config().merged(fastcls.Config.nest(settings)))
    clf.fit(quiet=True)
    return [row["seconds"] for row in clf.history[1:]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--aug", default="standard")
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = (0, 1, 2, 4)
    seconds: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        for n in counts:
            seconds[n] += epoch_seconds(n, args)
    median = {n: statistics.median(v) for n, v in seconds.items()}
    print(
        json.dumps(
            {
                "benchmark": "workers",
                "settings": vars(args) | {"data": "builtin:digits train split (1257 images)", "arch": "cnn 3x32"},
                "seconds_per_epoch": median,
                "ratio_vs_0": {n: round(median[n] / median[0], 3) for n in counts},
                "fastest": min(median, key=median.get),
                "machine": {
                    "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "cpu": platform.processor(),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
