"""GPU training throughput of fastcls against a hand-written loop, and the GPU-only checks (run by gpu.sh).

1. images/s of resnet50 training at 224 px, bf16 autocast + channels-last, AdamW + one-cycle, for a
   hand-written PyTorch loop over a uint8 tensor on the GPU (no fastcls imports in it; the
   yardstick) and for fastcls on a folder of JPEGs: the memory path (decoded once; on the GPU when
   it fits) and the stream path (decoded every epoch by DataLoader workers). Timed: the training
   part of epochs 2.. (fastcls) / steps after the first epoch (hand loop).
2. `--bs auto` once: the batch size it picks.
3. fp16 resume once: 2 epochs stopped after 1 and resumed equal 2 uninterrupted epochs (weights).
4. CUDA RNG restore once: resume.pt's CUDA generator state brings back the same random draws,
   and dropout on the GPU makes the resumed run above depend on it.

timm's published figure for resnet50 AMP + channels-last training is 1,218 img/s on an RTX 3090;
the goal is fastcls >= 0.95x the hand loop on the same GPU. `--smoke` runs everything tiny (and on
the CPU skips what needs CUDA), to check the script itself. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))


def hand_loop(arch: str, images: torch.Tensor, labels: torch.Tensor, bs: int, epochs: int, classes: int) -> float:
    """What a careful practitioner writes: timm model, AdamW + OneCycleLR, bf16 autocast, channels-last,
    batches cut from a uint8 tensor on the GPU and normalised there. Returns images/s after epoch 1."""
    import timm

    device = images.device
    model = timm.create_model(arch, pretrained=False, num_classes=classes).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    steps = len(labels) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps * epochs)
    mean = torch.tensor((0.485, 0.456, 0.406), device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor((0.229, 0.224, 0.225), device=device).view(1, 3, 1, 1) * 255
    loss_fn = nn.CrossEntropyLoss()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    timed, start = 0, None
    for epoch in range(epochs):
        if epoch == 1:
            _sync(device)
            start = time.perf_counter()
        model.train()
        order = torch.randperm(len(labels), device=device)
        for i in range(steps):
            idx = order[i * bs : (i + 1) * bs]
            x = ((images[idx].float() - mean) / std).contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = loss_fn(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            timed += bs if epoch >= 1 else 0
    _sync(device)
    return timed / (time.perf_counter() - start)


def decode_plain(folder: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The hand loop's data, without fastcls: every JPEG resized (short side size / 0.875), centre-cropped,
    stacked into a uint8 (N, 3, size, size) tensor; labels from the class folders."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((folder / c).glob("*.jpg"))]

    def one(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = round(size / 0.875) / min(image.size)
            w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
            image = image.resize((w, h), Image.Resampling.BILINEAR)
            left, top = (w - size) // 2, (h - size) // 2
            return np.asarray(image.crop((left, top, left + size, top + size))).transpose(2, 0, 1)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        arrays = list(pool.map(one, [f for f, _ in files]))
    return torch.from_numpy(np.stack(arrays)), torch.tensor([i for _, i in files]), len(classes)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fastcls_images_per_second(folder: Path, arch: str, settings: dict, out: Path) -> tuple[float, dict]:
    """Train with fastcls's API and time the training part of epochs 2.. with a fastai callback."""
    from fastai.callback.core import Callback

    import fastcls

    class TrainTimer(Callback):
        order = 0

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.images: list[int] = []

        def before_train(self) -> None:
            _sync(self.learn.dls.train.device)
            self.start, self.count = time.perf_counter(), 0

        def after_batch(self) -> None:
            if self.training:
                self.count += len(self.yb[0])

        def after_train(self) -> None:
            _sync(self.learn.dls.train.device)
            self.seconds.append(time.perf_counter() - self.start)
            self.images.append(self.count)

    timer = TrainTimer()
    base = {"arch": arch, "command": "train", "strategy": "full", "valid_pct": 0.02, "lr": 1e-3}
    config = fastcls.Config().merged(fastcls.Config.nest(base | settings | {"source": str(folder), "out": str(out)}))
    clf, _ = fastcls.train_run(config, reporter="quiet", callbacks=[lambda trainer: timer])
    rate = sum(timer.images[1:]) / sum(timer.seconds[1:])
    return rate, {"bs": clf.config.data.bs, "loader": clf.config.data.loader, "workers": clf.config.data.workers}


def resume_matches(folder: Path, arch: str, settings: dict, root: Path) -> bool:
    """2 epochs in one go against 2 epochs stopped after 1 and resumed: the same weights, bit for bit."""
    from safetensors.torch import load_file

    import fastcls

    base = {"arch": arch, "command": "train", "strategy": "full", "valid_pct": 0.1, "epochs": 2, "source": str(folder)}
    whole = fastcls.Config().merged(fastcls.Config.nest(base | settings | {"out": str(root / "whole")}))
    fastcls.train_run(whole, reporter="quiet")
    split = fastcls.Config().merged(fastcls.Config.nest(base | settings | {"out": str(root / "split")}))
    fastcls.train_run(split, reporter="quiet", stop_after=1)
    fastcls.resume_run(root / "split", reporter="quiet")
    a, b = load_file(str(root / "whole" / "model.safetensors")), load_file(str(root / "split" / "model.safetensors"))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cuda_rng_restores() -> bool:
    """capture_rng / restore_rng (what resume.pt holds) bring back the CUDA generator's draws."""
    from fastcls.train.resume import capture_rng, restore_rng

    generator = torch.Generator().manual_seed(0)
    torch.cuda.manual_seed_all(7)
    torch.rand(3, device="cuda")
    state = capture_rng(generator)
    first = torch.rand(1000, device="cuda")
    torch.rand(5, device="cuda")
    restore_rng(state, generator)
    return "cuda" in state and torch.equal(first, torch.rand(1000, device="cuda"))


def main() -> None:
    from data_pipeline import write_folder

    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--bs", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--smoke", action="store_true", help="tiny settings; runs on the CPU too")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fastcls-bench-photos")
    args = parser.parse_args()
    if args.smoke:
        args.arch, args.size, args.images, args.bs, args.epochs, args.workers = "resnet18", 32, 96, 16, 2, 1
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not args.smoke:
        raise SystemExit("gpu_train.py needs a CUDA GPU (or --smoke to check the script on the CPU).")
    torch.backends.cudnn.benchmark = True
    folder = write_folder(args.folder / str(args.images), args.images)
    root = Path(tempfile.mkdtemp(prefix="fastcls-gpu-"))
    result: dict = {"benchmark": "gpu_train", "settings": vars(args) | {"folder": str(folder)}}
    timings: dict = {}

    images, labels, classes = decode_plain(folder, args.size)
    start = time.perf_counter()
    timings["hand_loop"] = hand_loop(args.arch, images.to(device), labels.to(device), args.bs, args.epochs, classes)
    result["hand_loop_seconds"] = round(time.perf_counter() - start, 1)
    del images

    common = {"precision": "bf16", "channels_last": True, "epochs": args.epochs, "bs": args.bs, "size": args.size}
    for name, extra in (
        ("fastcls_memory", {"loader": "memory", "aug": "none"}),
        ("fastcls_stream", {"loader": "stream", "aug": "none", "workers": args.workers}),
        ("fastcls_memory_augmented", {"loader": "memory", "aug": "standard"}),
    ):
        start = time.perf_counter()
        timings[name], used = fastcls_images_per_second(folder, args.arch, common | extra, root / name)
        result[f"{name}_settings"] = used | {"seconds": round(time.perf_counter() - start, 1)}
    result["images_per_second"] = {k: round(v, 1) for k, v in timings.items()}
    hand = timings["hand_loop"]
    result["ratio_over_hand_loop"] = {k: round(v / hand, 3) for k, v in timings.items() if k != "hand_loop"}
    result["goal_memory_at_least_0.95x_hand"] = timings["fastcls_memory"] >= 0.95 * hand

    small = {"images": min(args.images, 512)}
    small_folder = write_folder(args.folder / f"{small['images']}", small["images"])
    auto = {"bs": "auto", "epochs": 1, "precision": "bf16", "channels_last": True, "size": args.size}
    _, used = fastcls_images_per_second(small_folder, args.arch, auto | {"epochs": 2}, root / "bs-auto")
    result["bs_auto"] = used["bs"]
    precision = "fp16" if cuda else "bf16"  # fp16 (grad scaler) needs CUDA
    check = {"precision": precision, "size": args.size, "bs": min(args.bs, 32), "head_dropout": 0.5, "workers": 0}
    result[f"{precision}_resume_bit_identical"] = resume_matches(small_folder, args.arch, check, root / "resume")
    result["cuda_rng_restore"] = cuda_rng_restores() if cuda else "skipped (no CUDA)"
    result["machine"] = {
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
