"""`fastcls pretrain` as a Python call: pretrain a backbone self-supervised and write a run folder.

The folder is a normal fastcls run (config.toml, metrics.csv, plots/curves.png, report.md,
model.json, model.safetensors) whose model.safetensors is the backbone alone, named as the
arch's classifier names it, and whose model.json says `"classifier": false`. Fine-tune it with
`fastcls finetune DATA --arch A --weights RUN`. Ctrl-C/SIGTERM or `stop_after` save it after the
last finished epoch, and `resume_pretrain` continues it exactly.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.build import model_from_card
from fastcls.config import flag
from fastcls.errors import ConfigError, DataError, FastclsError, Interrupted, RunError, TrainingDiverged
from fastcls.model_card import ModelCard
from fastcls.pretrain.config import PretrainConfig, load_pretrain_config
from fastcls.pretrain.files import PretrainResult, backbone_card, write_run
from fastcls.reporting import Reporter, as_reporter
from fastcls.runs import default_run_name, require_run
from fastcls.staging import StagedRun

if TYPE_CHECKING:
    from fastcls.data.images import Preprocessing

__all__ = ["PretrainResult", "pretrain", "resume_pretrain"]


def _preprocessing(config: PretrainConfig, spec, card: ModelCard | None, paths: list[Path]) -> Preprocessing:
    from fastcls.data.images import Preprocessing
    from fastcls.models.registry import default_preprocessing
    from fastcls.pretrain.data import median_side

    if card is not None and card.get("preprocessing"):
        prep = Preprocessing.from_dict(card.preprocessing)
        return replace(prep, size=config.data.size or prep.size)
    native = median_side(paths) if spec.family == "cnn" and not config.data.size else 64
    return default_preprocessing(spec, config.data.size, native)


def pretrain(
    config: PretrainConfig, reporter: Reporter | str | None = None, stop_after: int | None = None
) -> PretrainResult:
    """Pretrain as `config` says into `run.out`, else `run.root/run.name` (default `<method>-<arch>-<time>`).

    >>> config = PretrainConfig().merged(PretrainConfig.nest({"source": "builtin:digits", "epochs": 2}))
    >>> result = pretrain(config, reporter="quiet")  # doctest: +SKIP
    >>> result.probe["accuracy"] > result.probe_start["accuracy"]  # doctest: +SKIP
    True
    """
    config = config.merged({})
    name = config.run.name or default_run_name(f"{config.pretrain.method}-{config.model.arch}")
    final = Path(config.run.out) if config.run.out else Path(config.run.root) / name
    return _pretrain_into(final, config, as_reporter(reporter), stop_after, None)


def resume_pretrain(
    path: str | Path, reporter: Reporter | str | None = None, stop_after: int | None = None
) -> PretrainResult:
    """Continue a pretraining run stopped by `stop_after`, Ctrl-C or SIGTERM, exactly where it stopped."""
    from fastcls.train.resume import RESUME_FILE, read_state

    folder = require_run(path)
    card = ModelCard.find(folder)
    if card is None or card.get("task") != "pretrain":
        raise RunError(f"{folder} is not a pretraining run; continue a classifier with `fastcls train --resume`.")
    if not card.get("stopped"):
        raise RunError(
            f"{folder} finished its {card.get('epochs', '?')} epochs, so there is nothing to resume; to pretrain "
            f"further, start from it: fastcls pretrain DATA {flag('arch')} {card.get('arch')} "
            f"{flag('weights')} {folder}"
        )
    if stop_after is not None and stop_after <= int(card.get("epochs", 0)):
        raise ConfigError(
            f"--stop-after {stop_after} is not after epoch {card.get('epochs')}, where {folder} stopped; "
            f"give a later epoch (at most {card.get('planned_epochs')}) or leave it out."
        )
    state = read_state(folder / "checkpoints" / RESUME_FILE)
    config = load_pretrain_config(folder / "config.toml").merged({"run": {"out": str(folder), "exist_ok": True}})
    return _pretrain_into(folder, config, as_reporter(reporter), stop_after, state)


def _pretrain_into(
    final: Path, config: PretrainConfig, report: Reporter, stop_after: int | None, state: dict[str, Any] | None
) -> PretrainResult:
    try:
        import lightly  # noqa: F401
    except ImportError:
        raise ConfigError("fastcls pretrain needs lightly: pip install 'fastcls[ssl]' (or lightly itself).") from None
    from fastcls.train.resume import RESUME_FILE

    # fastcls.staging's protocol: trained in the locked `.NAME.partial` beside `final`, renamed into place
    with StagedRun(final, config.run.exist_ok) as staged:  # an existing run is refused before any work
        if staged.marker is not None and (staged.staging / "checkpoints" / RESUME_FILE).is_file():
            raise RunError(
                f"{staged.final} has an interrupted training run in {staged.staging}; resume it "
                f"(fastcls train --resume {staged.final}) or remove it (fastcls runs clean --interrupted) first."
            )
        staged.start("pretrain" if state is None else "pretrain-resume", config.to_dict())
        try:
            result, stop = _train_and_write(staged, config, report, stop_after, state)
        except BaseException:
            # pretraining resumes from a committed run folder only: a staging folder left by a crash before
            # the commit holds no epoch to continue, so it goes (StagedRun keeps those with a resume.pt)
            (staged.staging / "checkpoints" / RESUME_FILE).unlink(missing_ok=True)
            raise
    if stop is not None:  # raised after the commit and the lock's release: the run folder holds the epochs
        raise stop
    return result


def _train_and_write(
    staged: StagedRun, config: PretrainConfig, report: Reporter, stop_after: int | None, state: dict[str, Any] | None
) -> tuple[PretrainResult, FastclsError | None]:
    """Train, write and commit the run; the error to raise once the staging folder is released, if any."""
    from fastcls.device import pick_device
    from fastcls.models.registry import resolve_arch
    from fastcls.models.scratch import check_cnn_config
    from fastcls.pretrain.backbone import build_backbone
    from fastcls.pretrain.data import TwoViews, decode_images, find_images, probe_splits
    from fastcls.pretrain.loop import SslTrainer, StopSignals
    from fastcls.pretrain.methods import get_method, view_settings
    from fastcls.pretrain.probe import run_probe
    from fastcls.train.learner import seed_everything

    ssl, started = config.pretrain, time.perf_counter()
    method = get_method(ssl.method)
    spec = resolve_arch(config.model.arch)
    card = ModelCard.find(config.model.weights) if config.model.pretrained else None
    if card is not None:
        config.model = model_from_card(config.model, card, spec.name)
    if spec.family == "cnn":
        check_cnn_config(config.model.cnn)
    files = find_images(config.data.source, config.data.valid_pct, ssl.seed)
    probe_source = files.source
    if ssl.probe_data:
        from fastcls.data.sources import resolve_source

        probe_source = resolve_source(ssl.probe_data, config.data.valid_pct, ssl.seed)
    probe_kind = ssl.probe or ("knn" if probe_source is not None else "none")
    if probe_kind != "none" and probe_source is None:
        raise DataError(
            f"{config.data.source} has no labels (a folder of images without class folders), so --probe "
            f"{probe_kind} has nothing to score; pass --probe-data LABELLED_DATA or --probe none."
        )
    files = _with_fraction(files, config.data.fraction, ssl.seed)
    prep = _preprocessing(config, spec, card, files.paths)
    images, labelled_train = decode_images(files, prep, config.data.on_bad_image, report)
    if spec.family == "cnn" and card is None:
        from fastcls.data.loaders import channel_stats

        mean, std = channel_stats(images.images)
        prep = replace(prep, mean=mean, std=std)
    probe = None
    if probe_kind != "none":
        reuse = labelled_train if probe_source is files.source and config.data.fraction >= 1 else None
        probe = probe_splits(probe_source, prep, config.data.on_bad_image, report, reuse)
    seed_everything(ssl.seed)
    backbone = build_backbone(spec, prep.size, config.model.cnn, config.model.pretrained, config.model.weights)
    device = pick_device()
    hidden = ssl.hidden_dim or method.hidden_dim
    model = method.model(backbone.module, backbone.feature_dim, hidden).to(device)
    settings = view_settings(prep.size, prep.mean, prep.std, _min_scale(ssl, method), ssl.hflip)
    views = TwoViews(images.images, method.views(settings))
    if config.data.workers is None:  # views are cut from decoded images in memory: in-process is the default
        config.data.workers = 0
    trainer = SslTrainer(
        model, views, ssl, int(config.data.bs), device, report, config.data.workers, stop_after, method.target_network
    )

    def score() -> dict[str, Any]:
        train, valid, classes = probe
        return run_probe(probe_kind, backbone.module, train, valid, len(classes), prep, device, ssl.knn_k).to_dict()

    probe_start = None
    if state is not None:
        trainer.restore(state)
        probe_start = state.get("probe_start")
        report.info(f"resuming {method.name} pretraining after epoch {len(trainer.history)} of {ssl.epochs}")
    elif probe is not None:
        probe_start = score()
        report.info(f"{probe_kind} probe of the starting backbone: {probe_start['accuracy']:.4f}")
    report.info(
        f"{method.name} pretraining of {spec.name} ({backbone.weights_note}, {backbone.feature_dim} features) on "
        f"{len(views)} images at {prep.size}px, batch {config.data.bs}, {trainer.steps_per_epoch} steps/epoch"
    )
    config.model.arch, config.data.size = spec.name, prep.size
    signals = StopSignals()
    with signals.installed():
        history = trainer.fit(signals)
    if not history:
        why = trainer.diverged or f"{trainer.stopped} during epoch 1"
        if trainer.diverged:
            raise TrainingDiverged(f"{why}, before any epoch finished; nothing was saved. Lower {flag('lr')}.")
        raise Interrupted(f"{why}, before any epoch finished; nothing was saved.")
    interrupted = trainer.stopped in ("SIGINT", "SIGTERM")
    result = PretrainResult(staged.final, config, history, ssl.epochs, stopped=trainer.stopped)
    result.probe_start = probe_start
    if probe is not None and not interrupted:  # after a signal: save at once, a second one would lose the run
        result.probe = score()
        start = f" (before pretraining: {probe_start['accuracy']:.4f})" if probe_start else ""
        report.info(f"{probe_kind} probe after pretraining: {result.probe['accuracy']:.4f}{start}")
    result.card = backbone_card(config, result, spec.family, prep, backbone, len(images.skipped))
    result.card["diverged"] = trainer.diverged
    write_run(staged.staging, staged.final, result, backbone.module, trainer, probe_start)
    result.path = staged.commit()
    if not trainer.stopped:
        from fastcls.train.resume import RESUME_FILE

        (result.path / "checkpoints" / RESUME_FILE).unlink(missing_ok=True)  # a resumed run that finished
    report.info(f"pretraining took {time.perf_counter() - started:.0f}s; backbone saved to {result.path}")
    if trainer.diverged:
        return result, TrainingDiverged(
            f"{trainer.diverged}; {result.path} holds the last good epoch ({len(history)}). Lower {flag('lr')}."
        )
    if interrupted:
        return result, Interrupted(
            f"{trainer.stopped} after epoch {len(history)} of {ssl.epochs}; {result.path} holds it. Continue "
            f"exactly where it stopped with: fastcls pretrain --resume {result.path}"
        )
    return result, None


def _with_fraction(files, fraction: float, seed: int):
    """Pretrain on a seeded `fraction` of the images (stratified when they are labelled)."""
    if fraction >= 1:
        return files
    from fastcls.pretrain.data import ImageFiles

    if files.source is not None:
        source = files.source.with_fraction(fraction, seed)
        return ImageFiles(files.spec, [s.path for s in source.split("train")], source)
    import random

    keep = sorted(random.Random(seed).sample(range(len(files.paths)), max(1, round(fraction * len(files.paths)))))
    return ImageFiles(files.spec, [files.paths[i] for i in keep], None)


def _min_scale(ssl, method) -> float:
    return ssl.min_scale if ssl.min_scale is not None else method.min_scale
