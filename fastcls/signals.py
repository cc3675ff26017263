"""Ctrl-C and SIGTERM as a polite stop request, shared by classifier training and pretraining."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["stop_on_signals"]


@contextmanager
def stop_on_signals(holder: Any) -> Iterator[None]:
    """While the block runs, SIGINT/SIGTERM set `holder.reason` to the signal's name (the loop stops
    after its current batch); a second signal raises KeyboardInterrupt. Main thread only, where
    Python delivers signals; the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if holder.reason is not None:
            raise KeyboardInterrupt
        holder.reason = signal.Signals(signum).name

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)
