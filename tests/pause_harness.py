"""Run the real `fastcls` command with one pause point, so a test can SIGKILL it at a known moment.

    python tests/pause_harness.py POINT SIGNAL_FILE FASTCLS_ARGS...

POINT is one of
  mid-epoch:E         during epoch E's second training batch
  writing:NAME#N      halfway through the N-th atomic write of a file called NAME (its temp file is
                      half written and fsynced: a torn write, as a kill or a slow disk leaves it)
  publishing:E        after epoch E's resume.pt is written, before its checkpoints are renamed into place
  after-epoch:E       after epoch E's checkpoints and resume.pt are all in place
On reaching it the process creates SIGNAL_FILE, then waits until SIGNAL_FILE.go exists (or a
SIGKILL ends it), and carries on. Not a test module: the tests start it as a subprocess.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def _pause(signal_file: Path) -> None:
    signal_file.touch()
    go = signal_file.with_name(signal_file.name + ".go")
    deadline = time.time() + 600
    while not go.exists() and time.time() < deadline:
        time.sleep(0.05)


def _install(point: str, signal_file: Path) -> None:
    kind, _, where = point.partition(":")
    if kind == "mid-epoch":
        from fastcls.train.callbacks import EpochLog

        real_batch = EpochLog.after_batch

        def after_batch(self):
            real_batch(self)
            if self.training and len(self.history) == int(where) - 1 and self.iter == 1:
                _pause(signal_file)

        EpochLog.after_batch = after_batch
    elif kind == "writing":
        import fastcls.runs

        name, _, nth = where.partition("#")
        real_write, seen = fastcls.runs.atomic_write_bytes, {"n": 0}

        def atomic_write_bytes(path, data):
            path = Path(path)
            if path.name == name:
                seen["n"] += 1
                if seen["n"] == int(nth):
                    fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                    os.write(fd, data[: len(data) // 2])
                    os.fsync(fd)
                    _pause(signal_file)
            return real_write(path, data)

        fastcls.runs.atomic_write_bytes = atomic_write_bytes
    elif kind in ("publishing", "after-epoch"):
        from fastcls.train.callbacks import Checkpoints
        from fastcls.train.resuming import ResumePoint

        if kind == "publishing":
            real_publish = Checkpoints.publish

            def publish(self):
                if len(self.history) == int(where) and self.pending:
                    _pause(signal_file)
                real_publish(self)

            Checkpoints.publish = publish
        else:
            real_after = ResumePoint.after_epoch

            def after_epoch(self):
                real_after(self)
                if len(self.history) == int(where):
                    _pause(signal_file)

            ResumePoint.after_epoch = after_epoch
    else:
        raise SystemExit(f"unknown pause point {point!r}")


if __name__ == "__main__":
    point, signal_file, *args = sys.argv[1:]
    _install(point, Path(signal_file))
    from fastcls.cli.app import app

    app(args, prog_name="fastcls")
