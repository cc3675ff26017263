"""Training-loop overhead of fastcls against a hand-written PyTorch loop (AdamW + OneCycleLR).

Same model, same uint8 data tensors, batch size, threads and epochs; only the loop differs.
Prints JSON: images/s of each, the ratio fastcls/hand (1.0 = no overhead), and the machine.
Run: .venv/bin/python benchmarks/train_overhead.py [--size 32] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from torch import nn

from fastcls.config import CnnConfig, TrainConfig
from fastcls.data.images import Preprocessing
from fastcls.data.loaders import Batches, DecodedSplit, channel_stats, decode_split
from fastcls.data.sources import resolve_source
from fastcls.models.scratch import ConfigurableCNN
from fastcls.reporting import Reporter
from fastcls.train.learner import Trainer


def hand_loop(model, split, prep, bs, epochs, lr, wd):
    """What the seed notebooks wrote: shuffle, normalise, forward, loss, backward, step, schedule."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps = len(split.labels) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps * epochs)
    loss_fn = nn.CrossEntropyLoss()
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(prep.std).view(1, 3, 1, 1) * 255
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(split.labels))
        for i in range(steps):
            idx = order[i * bs : (i + 1) * bs]
            x = (split.images[idx].float() - mean) / std
            loss = loss_fn(model(x), split.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    source = resolve_source("builtin:digits")
    prep = Preprocessing(size=args.size)
    train = decode_split(source.split("train"), source.classes, prep)
    mean, std = channel_stats(train.images)
    prep = Preprocessing(size=args.size, mean=mean, std=std)
    empty = DecodedSplit(train.images[:0], train.labels[:0], [], [])
    config = CnnConfig()
    n_train = (len(train.labels) // args.bs) * args.bs

    results = {}
    for name in ("hand", "fastcls") * args.rounds:  # interleaved, to even out machine drift
        torch.manual_seed(0)
        model = ConfigurableCNN(config, len(source.classes), args.size)
        if name.startswith("hand"):
            times = hand_loop(model, train, prep, args.bs, args.epochs, 3e-3, 0.01)
        else:
            batches = Batches(train, prep, args.bs, shuffle=True, drop_last=True)
            valid = Batches(empty, prep, 256)
            settings = TrainConfig(epochs=args.epochs, lr=3e-3, wd=0.01, strategy="full")
            history = Trainer(model, batches, valid, settings, Reporter("quiet")).fit()
            times = [row["seconds"] for row in history]
        results.setdefault(name, []).extend(times[1:])  # first epoch is warm-up
    hand = n_train / statistics.median(results["hand"])
    ours = n_train / statistics.median(results["fastcls"])
    print(
        json.dumps(
            {
                "benchmark": "train_overhead",
                "model": f"cnn (5 blocks x 32 filters) at {args.size}px",
                "batch_size": args.bs,
                "train_images": n_train,
                "epochs_timed": len(results["hand"]),
                "hand_images_per_s": round(hand, 1),
                "fastcls_images_per_s": round(ours, 1),
                "ratio_fastcls_over_hand": round(ours / hand, 3),
                "overhead_pct": round(100 * (hand / ours - 1), 1),
                "threads": torch.get_num_threads(),
                "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
