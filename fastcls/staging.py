"""Runs being written: one staging folder per run, with a fixed name, a lock and a marker.

Why a fixed name: a run for `runs/x` is trained in `runs/.x.partial/`, the same folder every time.
After `kill -9` (the OOM killer, a preempted instance, a scheduler's time limit) there is no code
left to save anything, so what survives is what was written as training went: `partial.json` (the
marker, first: the settings as asked, the final path, who trains it), `config.toml` (the resolved
settings, before epoch 1), `metrics.csv` and `checkpoints/` with `resume.pt`, the record that
completes an epoch. The next `fastcls train ... --out runs/x`, or `fastcls train --resume runs/x`,
finds that folder by name and continues it (`fastcls.api`); nothing has to be searched for or
guessed. `commit()` moves the folder into place in one rename, so `runs/x` is never half-written,
and an existing folder is replaced (`--exist-ok`, resume) by exchanging the two folders at once.

The lock is `flock` on the staging folder itself: the kernel drops it when its process ends, even
by SIGKILL, so there are no stale locks, and two trainings of one run can never both hold it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastcls.config import flag
from fastcls.errors import RunError
from fastcls.model_card import ModelCard
from fastcls.runs import atomic_write_text

try:
    import fcntl
except ImportError:  # Windows: no flock; runs still stage and commit, without the lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MARKER",
    "PARTIAL_SUFFIX",
    "StagedRun",
    "Staging",
    "clean_staging",
    "final_of",
    "find_staging",
    "partial_path",
    "read_marker",
    "remove_staging",
]

PARTIAL_SUFFIX = ".partial"
MARKER = "partial.json"
MARKER_FORMAT = "fastcls.partial/1"
LEFTOVER_KINDS = (".staging-", ".replaced-")  # random-named folders of older fastcls versions and of exchange


def partial_path(final: str | Path) -> Path:
    """The staging folder of the run that will live at `final`: `PARENT/.NAME.partial`."""
    final = Path(final)
    return final.parent / f".{final.name}{PARTIAL_SUFFIX}"


def final_of(folder: str | Path) -> Path:
    """The run a staging folder belongs to (`runs/.x.partial` -> `runs/x`); other paths are returned as they are."""
    folder = Path(folder)
    name = folder.name
    if name.startswith(".") and name.endswith(PARTIAL_SUFFIX) and len(name) > len(PARTIAL_SUFFIX) + 1:
        return folder.parent / name[1 : -len(PARTIAL_SUFFIX)]
    return folder


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a staging folder, or None when it has none (or an unreadable one)."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None


def _owner(marker: dict[str, Any] | None) -> str:
    if not marker or "pid" not in marker:
        return ""
    return f" (pid {marker['pid']} on {marker.get('host', '?')}, since {marker.get('started', '?')})"


def owner_alive(marker: dict[str, Any] | None) -> bool:
    """Whether the process named in the marker still runs on this host (for display only: no lock is taken)."""
    if not marker or marker.get("host") != socket.gethostname() or not isinstance(marker.get("pid"), int):
        return False
    try:
        os.kill(marker["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Lock:
    """An exclusive, non-blocking flock on a folder, created when missing."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.fd = folder, None
        self.created = False

    def acquire(self) -> bool:
        """True once held; False when another process holds it."""
        while True:
            try:
                self.folder.mkdir()
                self.created = True
            except FileExistsError:
                self.created = False
            if fcntl is None:
                return True
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:  # the folder we locked may have been committed or removed since we opened it: then retry
                same = os.path.samestat(os.stat(self.folder), os.fstat(fd))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class StagedRun:
    """A run being written: files go to `staging` (`.NAME.partial`, locked); `commit()` puts them at `final`.

    Use as a context manager. Leaving it with an exception keeps the staging folder when it holds a
    finished epoch (`checkpoints/resume.pt`), so the run can be resumed, and removes it otherwise;
    `final` is left exactly as it was either way. `marker` is the marker an interrupted attempt left
    in the staging folder (None when there was none); call `start()` to begin afresh or `adopt()`
    to continue it.
    """

    def __init__(self, final: str | Path, exist_ok: bool = False) -> None:
        self.final = Path(final).expanduser()
        if self.final.exists() and not self.final.is_dir():
            raise RunError(f"{self.final} exists and is not a folder; choose another {flag('out')} or {flag('name')}.")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.staging = partial_path(self.final)
        self._lock = _Lock(self.staging)
        if not self._lock.acquire():
            raise RunError(
                f"run {self.final} is being trained by another process{_owner(read_marker(self.staging))}; "
                f"wait for it to finish, or choose another {flag('out')} or {flag('name')}."
            )
        self.marker = None if self._lock.created else read_marker(self.staging)
        if self.final.is_dir() and any(self.final.iterdir()) and not exist_ok:
            self._close(keep=not self._lock.created)
            raise RunError(_exists_message(self.final))

    def __enter__(self) -> StagedRun:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self._close(keep=(self.staging / "checkpoints" / "resume.pt").is_file())

    def _close(self, keep: bool) -> None:
        if not keep:
            shutil.rmtree(self.staging, ignore_errors=True)
        self._lock.release()

    def start(self, kind: str, request: dict[str, Any]) -> None:
        """Begin afresh: empty the folder (an attempt with no finished epoch, or none) and write the marker."""
        for item in list(self.staging.iterdir()):
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        now = datetime.now().isoformat(timespec="seconds")
        self.marker = {"format": MARKER_FORMAT, "final": str(self.final.absolute()), "kind": kind, "request": request}
        self.marker |= {"created": now}
        self._write_marker()

    def adopt(self) -> None:
        """Continue the interrupted attempt in place; the marker now names this process."""
        if self.marker is None:
            raise RunError(f"{self.staging} has no {MARKER}; it cannot be continued.")
        self._write_marker()

    def _write_marker(self) -> None:
        assert self.marker is not None
        self.marker |= {"pid": os.getpid(), "host": socket.gethostname()}
        self.marker["started"] = datetime.now().isoformat(timespec="seconds")
        atomic_write_text(self.staging / MARKER, json.dumps(self.marker, indent=2) + "\n")

    def commit(self) -> Path:
        """Put the staged run at `final` in one step, then drop the marker and the lock."""
        if self.final.is_dir() and not any(self.final.iterdir()):
            self.final.rmdir()
        if not self.final.exists():
            os.replace(self.staging, self.final)
        else:  # --exist-ok or a resume: keep every file of final the new run does not write, then swap
            _link_missing(self.final, self.staging)
            _swap(self.staging, self.final)
            shutil.rmtree(self.staging, ignore_errors=True)  # the old folder, now at the staging path
        (self.final / MARKER).unlink(missing_ok=True)
        self._lock.release()
        return self.final


def _exists_message(final: Path) -> str:
    hint = f"choose another {flag('name')}/{flag('out')}, or pass {flag('exist_ok')} to replace its files."
    try:
        card = ModelCard.find(final)
    except RunError:
        card = None
    if card is not None and card.stopped and (final / "checkpoints" / "resume.pt").is_file():
        hint = (
            f"it stopped after epoch {card.epochs} of {card.planned_epochs or '?'} "
            f"({card.stopped}); continue it with `fastcls train --resume {final}`, or {hint}"
        )
    return f"run folder {final} already exists and is not empty; {hint}"


def _link_missing(source: Path, target: Path) -> None:
    """Hard-link (else copy) into `target` every file of `source` that `target` lacks; symlinks stay symlinks."""
    for item in source.rglob("*"):
        if item.is_dir() and not item.is_symlink():
            continue
        goal = target / item.relative_to(source)
        if goal.exists() or goal.is_symlink():
            continue
        goal.parent.mkdir(parents=True, exist_ok=True)
        if item.is_symlink():
            os.symlink(os.readlink(item), goal)
            continue
        try:
            os.link(item, goal)  # our writes replace files, never edit them, so a shared inode is safe
        except OSError:
            shutil.copy2(item, goal)


def _swap(a: Path, b: Path) -> None:
    """Exchange two folders atomically (Linux renameat2 RENAME_EXCHANGE), else by two renames.

    Why ctypes: Python has no call for it, and it is the only way to replace a non-empty folder in
    one step; without it, `b` is missing for the moment between the renames (both copies intact).
    """
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        error = ctypes.get_errno()
        if error not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem cannot; fall back
            raise OSError(error, os.strerror(error), str(b))
    aside = b.parent / f".{b.name}.replaced-{os.getpid()}"
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)


@dataclass
class Staging:
    """A staging folder found beside runs: an interrupted run that can be resumed, a run training
    now, or a leftover that cannot be resumed (`reason` says why)."""

    path: Path
    final: Path
    marker: dict[str, Any] | None
    resume_epoch: int | None = None
    reason: str = ""

    @property
    def training_now(self) -> bool:
        return owner_alive(self.marker)

    @property
    def status(self) -> str:
        if self.training_now:
            return "training"
        return "interrupted" if self.resume_epoch is not None else "leftover"

    @property
    def resume_command(self) -> str | None:
        if self.resume_epoch is None:
            return None
        kind = (self.marker or {}).get("kind")
        return f"fastcls {kind if kind in ('train', 'finetune') else 'train'} --resume {self.final}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "status": self.status,
            "run": str(self.final),
            "resume_epoch": self.resume_epoch,
            "resume_command": self.resume_command,
            "reason": self.reason or None,
            "pid": (self.marker or {}).get("pid"),
            "created": (self.marker or {}).get("created", ""),
        }


def find_staging(root: str | Path) -> list[Staging]:
    """Every staging folder directly below `root` (`.NAME.partial`, and the random-named ones of older
    versions), with the epoch each can resume after, or why it cannot. Reads only; takes no lock."""
    root = Path(root).expanduser()
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        name = folder.name
        if not folder.is_dir() or not name.startswith("."):
            continue
        if name.endswith(PARTIAL_SUFFIX):
            marker = read_marker(folder)
            if marker is None:
                found.append(Staging(folder, final_of(folder), None, None, f"no {MARKER}"))
                continue
            from fastcls.train.resume import resumable_epoch  # torch: only when there is one to read

            epoch, reason = resumable_epoch(folder)
            found.append(Staging(folder, final_of(folder), marker, epoch, reason))
        elif any(kind in name for kind in LEFTOVER_KINDS):
            base = name[1:].split(".staging-")[0].split(".replaced-")[0]
            found.append(Staging(folder, folder.parent / base, None, None, "left by an older fastcls or a crash"))
    return found


def clean_staging(found: list[Staging], interrupted: bool = False) -> tuple[list[Staging], list[Staging]]:
    """Remove the leftovers among `found` (and the interrupted runs too with `interrupted`); a folder
    whose lock a process holds is skipped. Returns (removed, skipped)."""
    removed, skipped = [], []
    for item in found:
        if item.status == "training" or (item.status == "interrupted" and not interrupted):
            continue
        (removed if remove_staging(item.path) else skipped).append(item)
    return removed, skipped


def remove_staging(folder: Path) -> bool:
    """Remove a staging folder unless a process holds its lock; True when it was removed."""
    if fcntl is None or not folder.name.endswith(PARTIAL_SUFFIX):
        shutil.rmtree(folder)
        return True
    lock = _Lock(folder)
    if not lock.acquire():
        return False
    try:
        shutil.rmtree(folder)
    finally:
        lock.release()
    return True
