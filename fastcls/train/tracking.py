"""Experiment trackers for `--log`: metrics.csv always, plus TensorBoard and Weights & Biases.

Why not fastai's TensorBoardCallback/WandbCallback: they restart their step counter at every
`Learner.fit` (fastcls runs one fit per strategy phase, and again on resume), read metrics from
fastai's Recorder (fastcls computes exact epoch metrics in EpochLog instead), and try to draw
predictions through `dls.show_results`, which in-memory batches do not have. These log the same
rows as metrics.csv, with a batch step that continues across phases and resumes.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastai.callback.core import Callback

from fastcls.config import flag
from fastcls.errors import ConfigError
from fastcls.registry import Registry

__all__ = ["EPOCH_KEYS", "TRACKERS", "TensorBoardLog", "WandbLog", "trackers"]

EPOCH_KEYS = ("train_loss", "valid_loss", "accuracy", "top5", "lr")
RUN_ID_FILE = "fastcls-run-id"


class TensorBoardLog(Callback):
    """Event files under `RUN/tensorboard/`: the training loss and LR per batch, metrics per epoch.

    The batch LR is the head's group (as metrics.csv's `lr`), not the last optimiser group, which
    is the boosted tensors' own when --boost-sensitive is on."""

    order = 61  # after EpochLog has appended the epoch's row

    def __init__(self, history: list[dict[str, Any]], folder: Path, config: dict[str, Any]) -> None:
        self.history, self.folder, self.config = history, folder, config
        self.writer: Any = None

    def before_fit(self) -> None:
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    f"{flag('log')} tensorboard needs the tensorboard package: pip install 'fastcls[track]'"
                ) from None
            self.writer = SummaryWriter(str(self.folder / "tensorboard"))

    def after_batch(self) -> None:
        if self.training:
            step = len(self.history) * len(self.dls.train) + self.iter + 1
            self.writer.add_scalar("batch/train_loss", float(self.learn.loss.detach()), step)
            head = self.learn.epoch_log.head_index if hasattr(self.learn, "epoch_log") else -1
            self.writer.add_scalar("batch/lr", float(self.learn.opt.hypers[head]["lr"]), step)

    def after_epoch(self) -> None:
        row = self.history[-1]
        for key in EPOCH_KEYS:
            self.writer.add_scalar(f"epoch/{key}", row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbLog(Callback):
    """A Weights & Biases run under `RUN/wandb/`, offline unless WANDB_MODE says otherwise or an API
    key is set (offline runs upload later with `wandb sync RUN/wandb/offline-run-*`).

    One fastcls run is one W&B run, however often it is stopped and resumed: its id is kept in
    `RUN/wandb/fastcls-run-id` and passed with `resume="allow"`, and rows are logged at step =
    epoch, so the resumed part continues the same history (offline parts merge on sync).
    """

    order = 61

    def __init__(self, history: list[dict[str, Any]], folder: Path, config: dict[str, Any]) -> None:
        self.history, self.folder, self.config = history, folder, config
        self.wandb_run: Any = None

    def before_fit(self) -> None:
        if self.wandb_run is not None:
            return
        try:
            import wandb
        except ImportError:
            raise ConfigError(f"{flag('log')} wandb needs the wandb package: pip install 'fastcls[track]'") from None
        run = self.config.get("run", {})
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        (self.folder / "wandb").mkdir(parents=True, exist_ok=True)
        self.wandb_run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "fastcls"),
            name=run.get("name") or (Path(run["out"]).name if run.get("out") else None),
            dir=str(self.folder),
            mode=mode,
            config=self.config,
            id=self._run_id(),
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),  # leave stdout/stderr to fastcls
        )

    def _run_id(self) -> str:
        """The run's W&B id: from this folder (a staging folder being continued), else from the run
        folder (a stopped run being resumed), else a new one, written down for the next resume."""
        from fastcls.runs import atomic_write_text

        out = self.config.get("run", {}).get("out")
        for folder in (self.folder, Path(out) if out else None):
            if folder is not None and (folder / "wandb" / RUN_ID_FILE).is_file():
                run_id = (folder / "wandb" / RUN_ID_FILE).read_text(encoding="utf-8").strip()
                break
        else:
            run_id = secrets.token_hex(4)  # W&B ids are short lowercase alphanumerics
        atomic_write_text(self.folder / "wandb" / RUN_ID_FILE, run_id + "\n")
        return run_id

    def after_epoch(self) -> None:
        row = self.history[-1]
        self.wandb_run.log({"epoch": row["epoch"], **{key: row[key] for key in EPOCH_KEYS}}, step=row["epoch"])

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


TRACKERS: Registry[Callable[..., Callback] | None] = Registry(
    "log",
    {
        "csv": None,  # metrics.csv is always written (by EpochLog)
        "tensorboard": TensorBoardLog,
        "wandb": WandbLog,
    },
)


def trackers(value: str, history: list[dict[str, Any]], folder: Path | None, config: dict[str, Any]) -> list[Any]:
    """The tracker callbacks `value` asks for; none without a run folder to write into."""
    if folder is None:
        return []
    from fastcls.config import parse_log_names

    names = parse_log_names(value)
    return [TRACKERS[name](history, folder, config) for name in names if TRACKERS[name] is not None]
