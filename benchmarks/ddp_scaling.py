"""Data-parallel scaling on one machine: fastcls under torchrun against a hand-written torch DDP loop.

The same data (builtin:digits train split, valid every epoch), model shape (cnn, --blocks/--filters at
--size px), global batch and epochs, run by 1 and by N processes (gloo on the CPU, NCCL on GPUs), one
thread per process. Prints JSON: the median seconds per epoch (train + valid, first epoch dropped as
warm-up) of each, speed-up t1/tN and scaling efficiency speed-up/N of each, and fastcls's throughput
over the hand loop's at N processes (1.0 = no overhead), with the machine.
On a CPU whose cores are already busy (or with 2 cores) N processes are not faster: the figures show
the cost of the collectives, not a speed-up.
Run: .venv/bin/python benchmarks/ddp_scaling.py [--processes 2] [--epochs 4] [--size 16] [--bs 64]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"  # what torchrun gives each process: the 1-process runs get the same
    return env


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]


def fastcls_seconds(n: int, args: argparse.Namespace, out: Path) -> tuple[list[float], float]:
    flags = ["--arch", "cnn", "--blocks", str(args.blocks), "--filters", str(args.filters), "--size", str(args.size)]
    flags += ["--epochs", str(args.epochs), "--bs", str(args.bs), "--seed", "0", "--quiet", "--out", str(out)]
    launch = [sys.executable, "-m", "fastcls"] if n == 1 else [*_torchrun(n), "-m", "fastcls"]
    extra = [] if n == 1 else ["--global-bs"]
    subprocess.run([*launch, "train", "builtin:digits", *flags, *extra], check=True, env=_env(), capture_output=True)
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return [float(r["seconds"]) for r in rows], float(rows[-1]["accuracy"])


def hand_seconds(n: int, args: argparse.Namespace, folder: Path) -> tuple[list[float], float]:
    flags = ["--bs", str(args.bs), "--size", str(args.size), "--epochs", str(args.epochs)]
    flags += ["--blocks", str(args.blocks), "--filters", str(args.filters)]
    command = [*_torchrun(n), str(HERE / "hand_ddp.py"), str(folder), *flags]
    done = subprocess.run(command, check=True, env=_env(), capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["valid_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--bs", type=int, default=64, help="the global batch, the same for every process count")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--filters", type=int, default=32)
    args = parser.parse_args()
    import torch

    from fastcls.data.builtin import builtin_folder, fastcls_home

    builtin_folder("digits")  # written to the cache once; the hand loop reads the same PNGs
    folder = fastcls_home() / "datasets" / "digits"
    timed, accuracy = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.processes):
            seconds, accuracy[f"fastcls_{n}"] = fastcls_seconds(n, args, Path(tmp) / f"fastcls-{n}")
            timed[f"fastcls_{n}"] = statistics.median(seconds[1:] or seconds)
            seconds, accuracy[f"hand_{n}"] = hand_seconds(n, args, folder)
            timed[f"hand_{n}"] = statistics.median(seconds[1:] or seconds)
    n = args.processes
    speedup = {who: timed[f"{who}_1"] / timed[f"{who}_{n}"] for who in ("fastcls", "hand")}
    print(
        json.dumps(
            {
                "benchmark": "ddp_scaling",
                "model": f"cnn ({args.blocks} blocks x {args.filters} filters) at {args.size}px, builtin:digits",
                "global_batch": args.bs,
                "processes": n,
                "epochs": args.epochs,
                "seconds_per_epoch": {k: round(v, 3) for k, v in timed.items()},
                "speedup": {k: round(v, 3) for k, v in speedup.items()},
                "scaling_efficiency": {k: round(v / n, 3) for k, v in speedup.items()},
                "ratio_fastcls_over_hand_throughput": round(timed[f"hand_{n}"] / timed[f"fastcls_{n}"], 3),
                "valid_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
                "threads_per_process": 1,
                "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                f"{'CUDA' if torch.cuda.is_available() else 'CPU, gloo'}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
