"""Silence what exporters print, down to the file descriptors, and keep it for error messages.

Why the descriptors: torch's classic ONNX exporter logs the whole TorchScript graph to stderr
from C++ when a conversion fails (torch 2.14's `setup_onnx_logging` tests the function
`_jit_is_onnx_log_enabled` instead of calling it, so the log is always on), and the dynamo
exporter and TorchScript print progress and deprecation warnings. None of that is for the user
of `fastcls export`; the one-line error we raise says what failed.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

__all__ = ["quiet_output"]


@contextlib.contextmanager
def quiet_output() -> Iterator[list[str]]:
    """Redirect fds 1 and 2, sys.stdout/stderr and Python warnings while the block runs; yields a
    list that holds the captured text once the block is over."""
    captured: list[str] = []
    text = io.StringIO()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in (1, 2):
                with contextlib.suppress(OSError):
                    copy = os.dup(fd)
                    os.dup2(sink.fileno(), fd)
                    saved.append((fd, copy))
            with warnings.catch_warnings(), contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                warnings.simplefilter("ignore")
                yield captured
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.append(text.getvalue() + sink.read().decode("utf-8", "replace"))
