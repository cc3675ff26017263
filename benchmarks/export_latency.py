"""CPU latency of exported classifiers: torch eager (the baseline) vs onnxruntime vs the torch.export program.

Two models at 224 px: the digits cnn (3 blocks of 64 filters, as `make demo` trains it, 10 classes),
written out by hand in plain torch, and timm's tf_efficientnet_lite0 (random init: weights do not
change the work). The baseline runs the module in eager mode, with no fastcls code. The same module
is written to ONNX and to a .pt2 with fastcls.export's format writers (what `fastcls export` writes,
less the parity check) and run the way `fastcls export`'s parity check runs it: onnxruntime on the
CPU, and torch.export.load(...).module(). Every call takes a numpy batch and returns numpy logits.
Calls are interleaved (eager, onnx, program, eager, ...) so drift in machine load hits all alike.

Prints JSON: median ms per batch of each runtime at batch 1 and 32, the ratio of each against eager
(< 1 is faster than eager), images/s, the ONNX exporter used, and the machine.
Run: .venv/bin/python benchmarks/export_latency.py [--size 224] [--repeats 30] [--models cnn,lite0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def digits_cnn(blocks: int = 3, filters: int = 64, dense: int = 256, classes: int = 10, size: int = 224) -> nn.Module:
    """conv -> ReLU -> BatchNorm -> 2x2 max-pool (ceil) per block, then flatten, dense, dropout, output."""
    layers: list[nn.Module] = []
    channels, side = 3, size
    for _ in range(blocks):
        layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(filters)]
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
        channels, side = filters, -(-side // 2)
    layers += [nn.Flatten(), nn.Linear(channels * side * side, dense), nn.ReLU(), nn.Dropout(0.2)]
    layers.append(nn.Linear(dense, classes))
    return nn.Sequential(*layers)


def lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def eager_runner(model: nn.Module):
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return run


def exported_runners(model: nn.Module, size: int, folder: Path, exporter: str) -> tuple[dict, str]:
    """Write the module as ONNX and .pt2 with fastcls's format writers; (runners, ONNX exporter used)."""
    from fastcls.export.formats import FORMATS
    from fastcls.export.metadata import ExportMetadata
    from fastcls.export.settings import ExportSettings

    example = torch.randn(2, 3, size, size)
    meta = ExportMetadata(
        classes=[], size=size, resize="squish", crop_pct=1.0, interpolation="bilinear", mean=None, std=None,
        input_name="input", input_dtype="float32", batch=None, output_name="logits", output_kind="logits",
        half=False, file_format="", exporter="", opset=None, source="benchmark", arch="", fastcls_version="",
    )  # fmt: skip
    runners, used = {}, ""
    for name, key in (("onnx", "onnxruntime"), ("exported-program", "exported_program")):
        spec = FORMATS[name]
        settings = ExportSettings(format=name, exporter=exporter if name == "onnx" else None)
        path = folder / f"model{spec.suffix}"
        with torch.no_grad():
            written, _ = spec.write(model, example, path, meta, settings)
        if name == "onnx":
            used = written.exporter
        runners[key] = spec.runner(path)
    return runners, used


def measure(runners: dict, batch: np.ndarray, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms per call of each runner, calls interleaved."""
    for run in runners.values():
        for _ in range(warmup):
            run(batch)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(batch)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--models", default="cnn,lite0", help="cnn, lite0 or both")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--exporter", default="auto", help="ONNX exporter: auto, dynamo or classic")
    args = parser.parse_args()
    torch.manual_seed(0)
    builders = {"cnn": lambda: digits_cnn(size=args.size), "lite0": lite0}
    names = {"cnn": "digits cnn (3 blocks x 64 filters, 10 classes)", "lite0": "tf_efficientnet_lite0 (1000 classes)"}
    results, exporters = {}, {}
    for key in args.models.split(","):
        model = builders[key]().eval()
        with tempfile.TemporaryDirectory() as folder:
            exported, exporters[key] = exported_runners(model, args.size, Path(folder), args.exporter)
            runners = {"eager": eager_runner(model), **exported}
            per_batch = {}
            for bs in (int(b) for b in args.batches.split(",")):
                batch = np.random.default_rng(bs).standard_normal((bs, 3, args.size, args.size), dtype=np.float32)
                ms = measure(runners, batch, args.warmup, args.repeats)
                per_batch[str(bs)] = {
                    "ms_per_batch": {name: round(value, 3) for name, value in ms.items()},
                    "images_per_s": {name: round(bs * 1000 / value, 1) for name, value in ms.items()},
                    "ratio_vs_eager": {name: round(value / ms["eager"], 3) for name, value in ms.items()},
                }
        results[names[key]] = per_batch
    import onnxruntime

    print(
        json.dumps(
            {
                "benchmark": "export_latency",
                "settings": vars(args),
                "results": results,
                "onnx_exporter": exporters,
                "machine": {
                    "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
