"""The hand-written baseline for benchmarks/ddp_scaling.py: a plain torch DDP loop, no fastcls.

What a practitioner writes for `torchrun --nproc-per-node N hand_ddp.py DIGITS_FOLDER ...`: gloo
(CPU) or NCCL (GPU) process group, the same seeded order on every rank with rank r taking its slice
of each global batch, DistributedDataParallel, AdamW + OneCycleLR, and a validation pass over each
rank's share with the sums all-reduced. Rank 0 prints JSON: seconds per epoch (train + valid).
Usage: torchrun --standalone --nproc-per-node N benchmarks/hand_ddp.py FOLDER --bs 64 --size 16 --epochs 3
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def load(folder, size):
    paths = sorted(Path(folder).glob("*/*.png"))
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths])
    classes = sorted({p.parent.name for p in paths})
    y = [classes.index(p.parent.name) for p in paths]
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(y), len(classes)


def cnn(blocks, filters, size, classes):
    layers, channels, side = [], 3, size
    for _ in range(blocks):
        layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(filters)]
        layers += [nn.MaxPool2d(2, ceil_mode=True)]
        channels, side = filters, (side + 1) // 2
    head = [nn.Flatten(), nn.Linear(channels * side * side, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, classes)]
    return nn.Sequential(*layers, *head)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--bs", type=int, default=64, help="global batch (split over the processes)")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--filters", type=int, default=32)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    torch.manual_seed(0)
    xtr, ytr, classes = load(args.folder / "train", args.size)
    xva, yva, _ = load(args.folder / "valid", args.size)
    n = len(yva)
    xva, yva = xva[rank * n // size : (rank + 1) * n // size], yva[rank * n // size : (rank + 1) * n // size]
    mean = xtr.float().mean((0, 2, 3), keepdim=True).to(device)
    std = xtr.float().std((0, 2, 3), keepdim=True).to(device)
    model = DistributedDataParallel(cnn(args.blocks, args.filters, args.size, classes).to(device))
    per, steps = args.bs // size, len(ytr) // args.bs
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * steps)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    order_gen = torch.Generator().manual_seed(0)
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(ytr), generator=order_gen)
        for i in range(steps):
            idx = order[i * args.bs + rank * per : i * args.bs + (rank + 1) * per]
            x, y = (xtr[idx].to(device).float() - mean) / std, ytr[idx].to(device)
            loss = loss_fn(model(x), y) / per
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        with torch.no_grad():
            for i in range(0, len(yva), 256):
                x, y = (xva[i : i + 256].to(device).float() - mean) / std, yva[i : i + 256].to(device)
                out = model.module(x)
                sums += torch.tensor([float(loss_fn(out, y)), float((out.argmax(1) == y).sum()), len(y)], device=device)
        dist.all_reduce(sums)
        seconds.append(time.perf_counter() - start)
    if rank == 0:
        print(
            json.dumps(
                {"seconds": seconds, "train_images": steps * args.bs, "valid_accuracy": float(sums[1] / sums[2])}
            )
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
