"""Data pipeline throughput: training batches per second with random-resized-crop + flip, for

- the yardstick: torchvision `ImageFolder` + `DataLoader` with the plain ImageNet training transform
  (RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize), written here without fastcls;
- fastcls stream: each JPEG decoded every epoch (`--loader stream`);
- fastcls memory: the same images decoded once (whole, short side size / 0.875), then cut per image.

Same folder, size, batch size, augmentation (area 0.08-1, aspect 3/4-4/3, flip 0.5) and number of
worker processes; each yields normalised float batches. The first batch (worker start-up) is not
timed; memory's one-off decoding is reported apart. The folder (default 4,000 photo-like JPEGs of
about 500x375, made from scikit-learn's two sample photos, cropped, scaled and colour-shifted) is
written once and reused. Also printed: the per-image split of the time between decoding and
augmenting (one process, one thread), and the memory of a streaming epoch over the folder with the
memory budget set to a quarter of its decoded size (`--rss`): the growth of the proportional set
size (PSS) of the process and its workers over the epoch, against 2x the budget.

Goals on a quiet machine: stream >= 1.0x the yardstick, memory >= 3x, the epoch's growth < 2x budget.
Run: .venv/bin/python benchmarks/data_pipeline.py [--images 4000] [--workers 2] [--size 224] [--bs 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# What `import fastcls` does before torch loads (fastcls/__init__.py): transparent huge pages for CPU
# tensors of 2 MiB and more. It must be set before torch is imported, so here it is process-wide; the
# yardstick's own allocations (one image at a time) are below that size: measured 262-268 images/s
# without it and 261-285 with it (2 workers, 224 px, 1,000 images), the same within noise.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np
import torch
from PIL import Image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SCALE, RATIO, FLIP, CROP_PCT = (0.08, 1.0), (3 / 4, 4 / 3), 0.5, 0.875


def write_folder(folder: Path, count: int, classes: int = 10, seed: int = 0) -> Path:
    """`count` JPEGs in `classes` class folders: crops of the two sample photos, scaled to about
    500x375 (+-20%), colour-shifted per channel, some mirrored. Written once (a marker says so)."""
    marker = folder / f".complete-{count}"
    if marker.is_file():
        return folder
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640 RGB photos
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(count):
        photo = photos[i % 2]
        h, w = photo.shape[:2]
        crop_w = int(w * rng.uniform(0.5, 1.0))
        crop_h = min(h, int(crop_w * 0.75 * rng.uniform(0.85, 1.15)))
        x0, y0 = int(rng.integers(0, w - crop_w + 1)), int(rng.integers(0, h - crop_h + 1))
        out_w = int(rng.uniform(400, 600))
        out_h = int(out_w * crop_h / crop_w)
        gain, shift = rng.uniform(0.8, 1.2, 3), rng.uniform(-20, 20, 3)
        jobs.append((i, photo, (x0, y0, x0 + crop_w, y0 + crop_h), (out_w, out_h), gain, shift, rng.random() < 0.5))

    def one(job) -> None:
        i, photo, box, size, gain, shift, mirror = job
        image = Image.fromarray(photo).crop(box).resize(size, Image.Resampling.BILINEAR)
        pixels = np.clip(np.asarray(image, dtype=np.float32) * gain + shift, 0, 255).astype(np.uint8)
        target = folder / f"class{i % classes}"
        target.mkdir(parents=True, exist_ok=True)
        out = Image.fromarray(pixels[:, ::-1] if mirror else pixels)
        out.save(target / f"{i:05d}.jpg", quality=90)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, jobs))
    marker.write_text("ok")
    return folder


def yardstick(folder: Path, size: int, bs: int, workers: int):
    """The plain torchvision pipeline (no fastcls)."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=SCALE, ratio=RATIO),
            transforms.RandomHorizontalFlip(FLIP),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=bs, shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0
    )


def fastcls_loader(folder: Path, size: int, bs: int, workers: int, loader: str):
    """fastcls's training loader for the folder, as `fastcls train` builds it; and its data."""
    from fastcls.config import Config
    from fastcls.data.images import Preprocessing
    from fastcls.data.pipeline import prepare_data
    from fastcls.data.sources import resolve_source
    from fastcls.reporting import Reporter

    aug = {"crop_scale": SCALE[0], "crop_ratio": RATIO[1], "hflip": FLIP}
    settings = Config().merged({"data": {"loader": loader, "workers": workers, "aug": aug, "valid_pct": 0.01}}).data
    source = resolve_source(folder, 0.01, 0)
    prep = Preprocessing(size, MEAN, STD, resize="crop", crop_pct=CROP_PCT)
    start = time.perf_counter()
    data = prepare_data(source, prep, settings, Reporter("quiet"))
    decode = time.perf_counter() - start
    train, _ = data.loaders(prep, bs, seed=0, channels_last=False)
    return train, decode, data


def images_per_second(loader, limit: int) -> tuple[float, int]:
    """Images/s over up to `limit` batches (0: the epoch), the first batch not timed."""
    count, start = 0, None
    for i, (x, _) in enumerate(loader):
        if start is None:
            start = time.perf_counter()
            continue
        count += len(x)
        if limit and i >= limit:
            break
    return count / (time.perf_counter() - start), count


def time_split(folder: Path, size: int, samples: int = 100) -> dict[str, float]:
    """Milliseconds per image, one process and one thread: decoding and augmenting, for each pipeline."""
    from torchvision import transforms

    from fastcls.data.augment import build_policy
    from fastcls.data.batching import normalise
    from fastcls.data.images import Preprocessing, load_uncropped, open_rgb

    torch.set_num_threads(1)
    paths = sorted(folder.rglob("*.jpg"))[:samples]
    plain = transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=SCALE, ratio=RATIO),
            transforms.RandomHorizontalFlip(FLIP),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    prep = Preprocessing(size, MEAN, STD, resize="crop", crop_pct=CROP_PCT)
    policy = build_policy("none", {"crop_scale": SCALE[0], "crop_ratio": RATIO[1], "hflip": FLIP}, size, "bilinear")

    def ms(function, items) -> tuple[float, list]:
        start = time.perf_counter()
        out = [function(item, seed) for seed, item in enumerate(items)]
        return round((time.perf_counter() - start) / len(items) * 1e3, 3), out

    pil_ms, pil_images = ms(lambda p, _: Image.open(p).convert("RGB"), paths)
    plain_ms, _ = ms(lambda image, _: plain(image), pil_images)
    rgb_ms, whole = ms(lambda p, _: torch.from_numpy(np.array(open_rgb(p))).permute(2, 0, 1), paths)
    stream_aug_ms, _ = ms(policy, whole)
    stored = [torch.from_numpy(np.array(load_uncropped(p, prep))).permute(2, 0, 1) for p in paths]
    memory_aug_ms, _ = ms(policy, stored)
    batch = torch.stack([policy(image, seed) for seed, image in enumerate(stored[:64])])
    normalise(batch, prep, "cpu")  # warm-up: the first call pays one-off allocation costs (3.4 ms/image measured)
    start = time.perf_counter()
    for _ in range(5):
        normalise(batch, prep, "cpu")
    normalise_ms = round((time.perf_counter() - start) / (5 * len(batch)) * 1e3, 3)
    return {
        "yardstick_decode_ms": pil_ms,
        "yardstick_transform_ms": plain_ms,
        "stream_decode_ms": rgb_ms,
        "stream_augment_ms": stream_aug_ms,
        "memory_augment_ms": memory_aug_ms,
        "fastcls_normalise_ms": normalise_ms,
    }


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def rss_child(folder: Path, size: int, bs: int, workers: int) -> dict:
    """In a fresh process: the memory budget at a quarter of the folder's decoded size, `--loader auto`
    (which must stream), one epoch, the peak PSS of this process and its workers sampled every 20 ms."""
    import torchvision.transforms.v2  # noqa: F401  (imported before the baseline, as training has it)

    from fastcls.data.images import Preprocessing
    from fastcls.data.pipeline import decoded_bytes

    count = len(list(folder.rglob("*.jpg")))
    decoded = decoded_bytes(count, Preprocessing(size))
    budget = decoded // 4
    os.environ["FASTCLS_MEMORY_BUDGET"] = str(budget)
    me = os.getpid()
    peak, stop = [0], threading.Event()
    baseline = _pss_kb(me)

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _pss_kb(me) + sum(_pss_kb(c) for c in _children(me)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    train, _, data = fastcls_loader(folder, size, bs, workers, "auto")
    seen = sum(len(x) for x, _ in train)
    stop.set()
    sampler.join()
    growth = (peak[0] - baseline) * 1024
    return {
        "loader_chosen": data.loader,
        "images": seen,
        "decoded_bytes": decoded,
        "budget_bytes": budget,
        "baseline_pss_bytes": baseline * 1024,
        "peak_pss_bytes": peak[0] * 1024,
        "epoch_growth_bytes": growth,
        "growth_over_budget": round(growth / budget, 3),
        "goal_growth_under_2x_budget": growth < 2 * budget,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=0, help="batches timed per pipeline (0: one epoch)")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fastcls-bench-photos")
    parser.add_argument("--no-rss", action="store_true", help="skip the memory check of a streaming epoch")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = write_folder(args.folder / str(args.images), args.images)
    if args.rss_child:
        print(json.dumps(rss_child(folder, args.size, args.bs, args.workers)))
        return
    results = {}
    plain = yardstick(folder, args.size, args.bs, args.workers)
    results["yardstick"], timed = images_per_second(plain, args.batches)
    stream, _, _ = fastcls_loader(folder, args.size, args.bs, args.workers, "stream")
    results["stream"], _ = images_per_second(stream, args.batches)
    memory, decode_seconds, _ = fastcls_loader(folder, args.size, args.bs, args.workers, "memory")
    results["memory"], _ = images_per_second(memory, args.batches)
    out = {
        "benchmark": "data_pipeline",
        "settings": vars(args) | {"folder": str(folder), "augmentation": "random-resized-crop 0.08-1 + hflip 0.5"},
        "images_per_second": {k: round(v, 1) for k, v in results.items()},
        "ratio_stream_over_yardstick": round(results["stream"] / results["yardstick"], 3),
        "ratio_memory_over_yardstick": round(results["memory"] / results["yardstick"], 3),
        "images_timed": timed,
        "memory_decode_seconds": round(decode_seconds, 2),
        "per_image_split": time_split(folder, args.size),
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor(), "torch": torch.__version__},
    }
    if not args.no_rss:
        command = [sys.executable, __file__, "--rss-child", "--images", str(args.images), "--folder", str(args.folder)]
        command += ["--size", str(args.size), "--bs", str(args.bs), "--workers", str(args.workers)]
        out["stream_epoch_memory"] = json.loads(
            subprocess.run(command, capture_output=True, text=True, check=True).stdout
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
