"""The hand-written baseline for benchmarks/digits_demo.py: what a student's notebook does.

Reads the same PNG split as `builtin:digits`, resizes to 16 px, trains the same CNN (3 blocks of
conv-relu-BN-maxpool with 64 filters, dense 256) with AdamW (weight decay 0.05) + OneCycleLR for 20
epochs, label smoothing 0.1 and the same light augmentation per image (random-resized crop of 75-100% of the area,
aspect within 1.1, rotation up to 10 degrees; torchvision.transforms.v2), and prints the test
accuracy as JSON: the recipe `fastcls train builtin:digits` uses.
Usage: python benchmarks/hand_digits.py DIGITS_FOLDER SEED
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as transforms


def load(folder):
    paths = sorted(Path(folder).glob("*/*.png"))
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((16, 16), Image.BILINEAR)) for p in paths])
    y = [int(p.parent.name) for p in paths]
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(y)  # uint8


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(cout), nn.MaxPool2d(2, ceil_mode=True)
    )


def main():
    root, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(seed)
    raw, ytr = load(root / "train")
    xte, yte = load(root / "test")
    xtr = raw.float() / 255
    mean, std = xtr.mean((0, 2, 3), keepdim=True), xtr.std((0, 2, 3), keepdim=True)
    xte = (xte.float() / 255 - mean) / std
    model = nn.Sequential(
        block(3, 64),
        block(64, 64),
        block(64, 64),
        nn.Flatten(),
        nn.Linear(64 * 2 * 2, 256),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(256, 10),
    )
    epochs, bs = 20, 64
    steps = len(ytr) // bs
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    augment = transforms.Compose(
        [
            transforms.RandomResizedCrop(16, scale=(0.75, 1.0), ratio=(1 / 1.1, 1.1), antialias=True),
            transforms.RandomRotation(10),
        ]
    )
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(ytr))
        for i in range(steps):
            idx = order[i * bs : (i + 1) * bs]
            x = torch.stack([augment(image) for image in raw[idx]])
            x = (x.float() / 255 - mean) / std
            loss = loss_fn(model(x), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(xte).argmax(1) == yte).float().mean().item()
    print(json.dumps({"test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
