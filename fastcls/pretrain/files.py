"""What a pretraining run writes: the backbone, model.json (no classifier), config.toml, metrics.csv with the
SSL loss per epoch, plots/curves.png, report.md, and the resume point while it is unfinished."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fastcls.config import flag
from fastcls.errors import RunError
from fastcls.model_card import BACKBONE_FORMAT, ModelCard
from fastcls.pretrain.config import PretrainConfig
from fastcls.runs import atomic_write_bytes, atomic_write_text
from fastcls.version import versions

__all__ = ["BACKBONE_FORMAT", "PretrainResult", "backbone_card", "report_text", "write_run"]

METRIC_COLUMNS = ("epoch", "ssl_loss", "lr", "target_momentum", "seconds")


@dataclass
class PretrainResult:
    """What a pretraining run made: its folder, per-epoch rows and the probe before and after."""

    path: Path
    config: PretrainConfig
    history: list[dict[str, Any]]
    planned_epochs: int
    probe: dict[str, Any] | None = None  # ProbeResult.to_dict() after pretraining
    probe_start: dict[str, Any] | None = None  # the same probe of the starting backbone
    stopped: str | None = None
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def ssl_loss(self) -> float | None:
        return self.history[-1]["ssl_loss"] if self.history else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.path),
            "method": self.config.pretrain.method,
            "arch": self.config.model.arch,
            "epochs": len(self.history),
            "planned_epochs": self.planned_epochs,
            "stopped": self.stopped,
            "ssl_loss": self.ssl_loss,
            "probe": self.probe,
            "probe_start": self.probe_start,
        }


def backbone_card(config: PretrainConfig, result: PretrainResult, family: str, prep, backbone, skipped: int) -> dict:
    metrics: dict[str, Any] = {"ssl_loss": result.ssl_loss, "skipped_images": skipped}
    for name, probe in (("probe", result.probe), ("probe_start", result.probe_start)):
        if probe is not None:
            metrics[f"{name}_{probe['kind']}_accuracy"] = probe["accuracy"]
    return {
        "format": BACKBONE_FORMAT,
        "task": "pretrain",
        "classifier": False,
        "arch": config.model.arch,
        "family": family,
        "model_settings": asdict(config.model.cnn) if family == "cnn" else {},
        "num_classes": 0,
        "classes": [],
        "feature_dim": backbone.feature_dim,
        "removed_classifier": backbone.removed,
        "preprocessing": prep.to_dict(),
        "data": config.data.source,
        "method": config.pretrain.method,
        "epochs": len(result.history),
        "planned_epochs": result.planned_epochs,
        "stopped": result.stopped,
        "metrics": metrics,
        "probe": result.probe,
        "probe_start": result.probe_start,
        "pretrained": config.model.pretrained,
        "weights": config.model.weights,
        "weights_note": backbone.weights_note,
        "checkpoints": {},
        "versions": versions(),
        "created": datetime.now().isoformat(timespec="seconds"),
    }


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    columns = [c for c in METRIC_COLUMNS if any(c in row for row in rows)] or ["epoch", "ssl_loss"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _curves(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """SSL loss per epoch, and the LR (and target momentum) it was trained with."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100, layout="constrained")
    loss_ax.plot(epochs, [r["ssl_loss"] for r in rows], "o-")
    loss_ax.set(xlabel="epoch", ylabel="self-supervised loss", title="SSL loss")
    lr_ax.plot(epochs, [r["lr"] for r in rows], "o-", label="learning rate (end of epoch)")
    lr_ax.set(xlabel="epoch", ylabel="learning rate", title="Schedule")
    if all("target_momentum" in r for r in rows):
        other = lr_ax.twinx()
        other.plot(epochs, [r["target_momentum"] for r in rows], "s--", color="tab:orange", label="target momentum")
        other.set_ylabel("target momentum")
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def report_text(card: dict[str, Any], result: PretrainResult, config: PretrainConfig) -> str:
    ssl = config.pretrain
    lines = [
        f"# {config.run.name or card['arch']}",
        "",
        f"- backbone: `{card['arch']}` ({card['family']}, {card['feature_dim']} features), {card['weights_note']}; "
        "no classifier",
        f"- method: {ssl.method} on `{card['data']}` at {card['preprocessing']['size']}px; {card['epochs']} of "
        f"{card['planned_epochs']} epochs, {ssl.opt} lr {result.config.pretrain.base_lr(config.data.bs):g}, "
        f"batch {config.data.bs}, seed {ssl.seed}",
    ]
    if result.probe is not None:
        start = f" (before pretraining: {result.probe_start['accuracy']:.4f})" if result.probe_start else ""
        lines.append(
            f"- {result.probe['kind']} probe on the valid split ({result.probe['valid']} images): "
            f"{result.probe['accuracy']:.4f}{start}"
        )
    lines += ["", "| epoch | ssl_loss | lr | seconds |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['epoch']} | {r['ssl_loss']:.4f} | {r['lr']:.3g} | {r['seconds']:.1f} |" for r in result.history]
    lines += [
        "",
        "![pretraining curves](plots/curves.png)",
        "",
        f"Fine-tune it: `fastcls finetune DATA {flag('arch')} {card['arch']} {flag('weights')} <this folder>`. "
        "Repeat it: `fastcls run config.toml`.",
        "",
    ]
    return "\n".join(lines)


def write_run(folder: Path, final: Path, result: PretrainResult, backbone, trainer, probe_start) -> None:
    """The run's files, each written atomically; the resume point when the run stopped early."""
    from safetensors.torch import save_file

    snapshot = trainer.snapshot
    prefix = "backbone."
    state = {k[len(prefix) :]: v.contiguous() for k, v in snapshot["model"].items() if k.startswith(prefix)}
    expected = set(backbone.state_dict())
    if set(state) != expected:  # the names a classifier of this arch uses, minus its head: checked, not assumed
        raise RunError(f"internal: the saved backbone has {len(state)} tensors, the model {len(expected)}.")
    tmp = folder / ".model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": BACKBONE_FORMAT})
    atomic_write_bytes(folder / "model.safetensors", tmp.read_bytes())
    tmp.unlink()
    ModelCard.from_dict(result.card).write(folder)
    config = result.config.merged({"run": {"name": final.name, "root": str(final.parent), "out": None}})
    atomic_write_text(folder / "config.toml", config.to_toml())
    _write_metrics(folder / "metrics.csv", result.history)
    _curves(result.history, folder / "plots" / "curves.png", f"{result.config.pretrain.method} {result.card['arch']}")
    atomic_write_text(folder / "report.md", report_text(result.card, result, config))
    if result.stopped:
        from fastcls.train.resume import RESUME_FILE, write_state

        write_state(folder / "checkpoints" / RESUME_FILE, {**snapshot, "probe_start": probe_start})
