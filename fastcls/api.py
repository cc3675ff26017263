"""The public Python API: `ImageClassifier`, `load`, `train_run`.

Keras-simple on the outside, fastai underneath::

    clf = fastcls.ImageClassifier("cnn", blocks=4)
    clf.fit("builtin:digits", epochs=5)
    print(clf.evaluate().accuracy)
    clf.save("runs/digits-cnn")
    fastcls.load("runs/digits-cnn").predict(["a.png"])
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.build import build_run, check_names, describe_suggestions, model_from_card, with_suggestions
from fastcls.config import Config, load_config
from fastcls.data.images import Preprocessing
from fastcls.data.sources import ImageSource, Sample, resolve_source
from fastcls.errors import DataError, RunError
from fastcls.evaluation import Evaluation, evaluate_samples
from fastcls.model_card import MODEL_FORMAT, ModelCard
from fastcls.predictions import Prediction, expand_images, rank_predictions
from fastcls.reporting import Reporter, as_reporter
from fastcls.runs import atomic_write_text, read_metrics, require_run
from fastcls.staging import StagedRun
from fastcls.version import versions

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fastcls.train.learner import Resume, Trainer

__all__ = [
    "Evaluation",
    "ImageClassifier",
    "Prediction",
    "check_names",
    "load",
    "model_from_card",
    "rank_predictions",
]


class ImageClassifier:
    """An image classifier: build it with an arch and options, `fit` it on DATA, then use or save it.

    `arch` is `cnn` (the configurable scratch CNN; options blocks, filters, organisation, kernel,
    activation, bn, dropout, dense) or any timm/torchvision name or fastcls alias. Any training or
    data setting (epochs, lr, bs, size, seed, wd, valid_pct, fraction, on_bad_image) may be given
    here or to `fit`.

    >>> clf = ImageClassifier("cnn", blocks=3, epochs=2).fit("builtin:digits", quiet=True)
    >>> clf.evaluate().accuracy > 0.8
    True
    """

    def __init__(self, arch: str = "cnn", **options: Any) -> None:
        self.config = Config().merged(Config.nest({"arch": arch, **options}))
        self.model: Any = None
        self.classes: list[str] = []
        self.preprocessing: Preprocessing | None = None
        self.history: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        self.family = ""
        self.lr_found: Any = None  # the LRFindResult when lr_find=True picked the LR
        self.checkpoint_epochs: dict[str, int] = {}  # checkpoint name -> epoch it holds
        self.diverged: str | None = None  # where the loss became NaN/inf, when it did
        self.stopped: str | None = None  # "stop-after", "SIGINT" or "SIGTERM" when training stopped before its plan
        self.resumed_after: int | None = None  # the epoch an interrupted run was continued from, when it was
        self.planned_epochs = 0
        self.sensitive_tensors: dict[str, list[str]] = {"frozen": [], "boosted": []}
        self.distributed: dict[str, Any] | None = None  # processes, backend and batches of a data-parallel run
        self.suggested: dict[str, Any] = {}  # settings taken from the data's recipe (with_suggestions)
        self._given: dict[str, Any] | None = Config.nest({"arch": arch, **options})
        self._source: ImageSource | None = None
        self._data: Any = None  # the TrainingData of the last fit (its loaders count streamed unreadable files)

    @classmethod
    def from_config(cls, config: Config) -> ImageClassifier:
        clf = cls(config.model.arch)
        clf.config = config.merged({})
        clf._given = None  # every setting is resolved already
        return clf

    # -- training -----------------------------------------------------------------------------
    def _resolve(self, data: str | Path | None, options: dict[str, Any]) -> Config:
        """The settings of a fit: this classifier's, then `options`; `suggested` says what the data's
        recipe filled in."""
        overrides = Config.nest(options)
        if data is not None:
            overrides.setdefault("data", {})["source"] = str(data)
        config = self.config.merged(overrides)
        if self._given is not None:  # built from options, not from a resolved config
            config, self.suggested = with_suggestions(config, self._given, overrides)
        return config

    def _prepare(
        self,
        config: Config,
        report: Reporter,
        log_dir: str | Path | None,
        stop_after: int | None = None,
        resume: Resume | None = None,
        callbacks: Sequence[Callable[[Trainer], Any]] = (),
    ) -> Trainer:
        """Build the run (fastcls.build) and take its model, classes and preprocessing: a Trainer."""
        built = build_run(config, report, log_dir, stop_after, resume, callbacks)
        self.config, self.model, self.classes, self.preprocessing = (
            built.config,
            built.model,
            built.source.classes,
            built.preprocessing,
        )
        self.family, self._source, self._data = built.spec.family, built.source, built.data
        self.metrics = {"skipped_images": built.data.skipped_count}
        self._valid_skipped = built.data.skipped_in("valid")  # a share of them, in a data-parallel run
        self.sensitive_tensors = built.sensitive_tensors
        if built.distributed is not None:
            self.distributed = built.distributed
        return built.trainer

    def fit(
        self,
        data: str | Path | None = None,
        *,
        reporter: Reporter | str | None = None,
        quiet: bool = False,
        log_dir: str | Path | None = None,
        stop_after: int | None = None,
        resume: Resume | None = None,
        callbacks: Sequence[Callable[[Trainer], Any]] = (),
        **options: Any,
    ) -> ImageClassifier:
        """Train on DATA (a folder, CSV or builtin:NAME) with one-cycle AdamW and the strategy.

        From scratch by default; with `pretrained=True` the weights are loaded (offline sources
        first) and the default strategy is freeze-unfreeze. `lr_find=True` picks the LR first and
        draws `plots/lr_find.png` into `log_dir`. `log_dir` also receives metrics.csv per epoch,
        the checkpoints and the resume state. `stop_after=N` ends after epoch N of the plan (so does
        Ctrl-C, after the current batch); `self.stopped` then says why. `resume_run` continues it.
        `callbacks` are factories called with the Trainer, returning extra fastai callbacks (a sweep's
        per-epoch report to Optuna, for example).
        """
        from fastcls.train.distributed import current_world, silent_reporter

        config = self._resolve(data, options)
        report = as_reporter(reporter, quiet)
        if self.suggested:
            report.info(describe_suggestions(config.data.source, self.suggested))
        world = current_world()
        if world is None:
            trainer = self._prepare(config, report, log_dir, stop_after, resume, callbacks)
        else:  # every rank prepares; a failure on any is raised on all; rank 0 alone writes and reports
            if not world.leader:
                report, log_dir = silent_reporter(), None
            trainer = world.together(lambda: self._prepare(config, report, log_dir, stop_after, resume, callbacks))
            self.metrics["skipped_images"] += int(world.total(self._valid_skipped)) - self._valid_skipped
        if config.train.lr_find:
            found = trainer.lr_find(config.train.lr_suggest)
            if world is not None:  # each rank probed its own share: all train with rank 0's pick
                found = world.from_leader(lambda: found)
            trainer.set_lr(found.lr)
            config.train.lr_find = False
            self.lr_found = found
            report.info(f"lr-find: {config.train.lr_suggest} suggests lr {found.lr:.3g}")
            if log_dir is not None:
                from fastcls.plots import lr_find_plot

                lr_find_plot(found, Path(log_dir) / "plots" / "lr_find.png")
        if log_dir is not None:  # the resolved settings, before epoch 1: what continuing after a kill -9 needs
            atomic_write_text(Path(log_dir) / "config.toml", config.to_toml())
        try:
            self.history = trainer.fit()
        finally:
            self._data.close()
        self.metrics["skipped_images"] = self._data.skipped_count if self._data is not None else 0
        kept = trainer.checkpoints.epochs[config.train.keep]
        row = self.history[kept - 1]
        self.metrics.update({k: v for k, v in row.items() if k not in ("epoch", "phase")})
        if "ema" in config.train.keep:  # the shipped model is the average: its scores are the run's
            self.metrics.update({k: row[f"ema_{k}"] for k in ("valid_loss", "accuracy", "top5")})
        self.metrics.update(kept_epoch=kept, stopped_early=bool(trainer.early and trainer.early.stopped))
        self.checkpoint_epochs = dict(trainer.checkpoints.epochs)
        self.diverged = trainer.nan_guard.message
        self.stopped, self.planned_epochs = trainer.stop.reason, trainer.planned_epochs
        return self

    def lr_find(
        self,
        data: str | Path | None = None,
        *,
        reporter: Reporter | str | None = None,
        quiet: bool = False,
        **options: Any,
    ):
        """Run only the LR range test (the model is left as it was); returns an LRFindResult.

        >>> result = ImageClassifier("cnn", blocks=2).lr_find("builtin:digits", quiet=True)
        >>> sorted(result.suggestions)
        ['minimum', 'slide', 'steep', 'valley']
        """
        suggested = self.suggested
        config = self._resolve(data, options)
        self.suggested = suggested  # the probe leaves this classifier as it was
        built = build_run(config, as_reporter(reporter, quiet), None)  # a model of its own: this one is kept
        try:
            return built.trainer.lr_find(config.train.lr_suggest)
        finally:
            built.data.close()  # the probe's loaders and their workers

    def resume_command(self, path: str | Path) -> str:
        """The command that continues this stopped run exactly (with as many processes as it had)."""
        processes = (self.distributed or {}).get("processes")
        if processes:
            return f"torchrun --nproc-per-node {processes} -m fastcls train --resume {path}"
        return f"fastcls train --resume {path}"

    # -- using a trained model ----------------------------------------------------------------
    def _require_trained(self) -> None:
        if self.model is None:
            raise RunError("this classifier has not been trained; call fit() or fastcls.load() first.")

    def _probabilities(self, images):
        """Softmax outputs for a uint8 (N, 3, S, S) tensor, in eval mode without gradients."""
        import torch

        from fastcls.data.loaders import Batches, DecodedSplit
        from fastcls.device import inference_batch

        split = DecodedSplit(images, torch.zeros(len(images), dtype=torch.long), [], [])
        self.model.eval()
        with torch.inference_mode():
            device = next(self.model.parameters()).device
            batches = Batches(split, self.preprocessing, inference_batch(device), device=device)
            outputs = [self.model(x).float().softmax(-1).cpu() for x, _ in batches]
        return torch.cat(outputs) if outputs else torch.zeros(0, len(self.classes))

    def _split_samples(self, data: str | Path | None, split: str | None) -> tuple[str, str, list[Sample]]:
        if data is None and self._source is not None:
            source = self._source
        else:
            spec = str(data) if data is not None else self.config.data.source
            source = resolve_source(spec, self.config.data.valid_pct, self.config.train.seed)
        split = split or ("test" if "test" in source.splits else "valid")
        if split not in source.splits:
            raise DataError(f"{source.spec} has no {split!r} split; it has {', '.join(source.splits)}.")
        unknown = sorted(set(source.classes) - set(self.classes))
        if unknown:
            raise DataError(
                f"{source.spec} has classes the model never saw: {', '.join(unknown)}; the model knows "
                f"{', '.join(self.classes)}."
            )
        return source.spec, split, source.split(split)

    def evaluate(
        self,
        data: str | Path | None = None,
        split: str | None = None,
        reporter: Reporter | str | None = "quiet",
    ) -> Evaluation:
        """Accuracy, top-5, loss, per-class precision/recall/F1 and confusion counts on a split.

        Default data is what the model was trained on; default split is test, else valid.
        """
        self._require_trained()
        spec, split, samples = self._split_samples(data, split)
        return evaluate_samples(
            self.model,
            self.preprocessing,
            self.classes,
            samples,
            data=spec,
            split=split,
            on_bad_image=self.config.data.on_bad_image,
            reporter=as_reporter(reporter),
        )

    def predict_proba(self, images: list[str | Path] | str | Path):
        """(an (N, classes) numpy array of probabilities, the paths they belong to); bad files skipped."""
        from fastcls.scoring import score_files

        self._require_trained()
        paths = expand_images([images] if isinstance(images, str | Path) else list(images))
        scores = score_files(self.model, self.preprocessing, paths, on_bad_image=self.config.data.on_bad_image)
        return scores.probs.numpy(), scores.paths

    def predict(self, images: list[str | Path] | str | Path, top: int = 3) -> list[Prediction]:
        """The most likely class of each image, with the `top` classes and their probabilities."""
        probs, paths = self.predict_proba(images)
        return rank_predictions(probs, paths, self.classes, top)

    # -- saving and loading -------------------------------------------------------------------
    def model_card(self) -> ModelCard:
        """The run's model.json: everything needed to rebuild and feed the model."""
        self._require_trained()
        return ModelCard(
            arch=self.config.model.arch,
            family=self.family,
            model_settings=asdict(self.config.model.cnn) if self.family == "cnn" else {},
            classes=list(self.classes),
            preprocessing=self.preprocessing.to_dict(),
            data=self.config.data.source,
            epochs=len(self.history),
            planned_epochs=self.planned_epochs,
            stopped=self.stopped,
            metrics=self.metrics,
            checkpoints=self.checkpoint_epochs,
            created=datetime.now().isoformat(timespec="seconds"),
            extra=self._card_extra(),
        )

    def _card_extra(self) -> dict[str, Any]:
        """model.json's record of how the model was trained, beyond what rebuilding it needs."""
        return {
            "pretrained": self.config.model.pretrained,
            "weights": self.config.model.weights,
            "strategy": self.config.train.strategy,
            "frozen_tensors": self.sensitive_tensors["frozen"],
            "boosted_tensors": self.sensitive_tensors["boosted"],
            "diverged": self.diverged,
            "distributed": self.distributed,
            "lr_find": (
                {"suggest": self.lr_found.suggest, "suggestions": self.lr_found.suggestions}
                if self.lr_found is not None
                else None
            ),
            "versions": versions(),
        }

    def write_files(self, folder: str | Path, final: str | Path) -> None:
        """Write the run's files into `folder` (each atomically) for a run that will live at `final`."""
        from safetensors.torch import save_file

        from fastcls.plots import training_curves
        from fastcls.report import run_report
        from fastcls.runs import atomic_write_bytes, write_metrics

        folder = Path(folder)
        state = {k: v.detach().cpu().clone().contiguous() for k, v in self.model.state_dict().items()}
        tmp = folder / ".model.safetensors.tmp"
        save_file(state, str(tmp), metadata={"format": MODEL_FORMAT})
        atomic_write_bytes(folder / "model.safetensors", tmp.read_bytes())
        tmp.unlink()
        card = self.model_card()
        card.write(folder)
        final = Path(final)
        config = self.config.merged({"run": {"name": final.name, "root": str(final.parent), "out": None}})
        atomic_write_text(folder / "config.toml", config.to_toml())
        write_metrics(folder / "metrics.csv", self.history)
        if self.history:
            training_curves(
                self.history,
                folder / "plots" / "curves.png",
                title=f"{card.arch} on {card.data}",
            )
        atomic_write_text(folder / "report.md", run_report(card.to_dict(), self.history, config))

    def save(self, path: str | Path, exist_ok: bool = False) -> Path:
        """Write a complete run folder at `path` (never half-written); returns the path."""
        self._require_trained()
        with StagedRun(path, exist_ok) as staged:
            if staged.marker is not None and (staged.staging / "checkpoints" / "resume.pt").is_file():
                raise RunError(
                    f"{staged.final} has an interrupted training run in {staged.staging}; resume it "
                    f"(fastcls train --resume {staged.final}) or remove it (fastcls runs clean --interrupted) first."
                )
            staged.start("save", {})
            self.write_files(staged.staging, staged.final)
            return staged.commit()


def load(path: str | Path) -> ImageClassifier:
    """Rebuild a trained classifier from a run folder: safetensors weights plus model.json, no pickle."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from fastcls.models.registry import ArchSpec, build_model

    folder = require_run(path)
    card = ModelCard.read(folder)
    card.require_classifier(folder)
    arch, family, classes = card.arch, card.family, card.classes
    try:
        prep = Preprocessing.from_dict(card.preprocessing)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{folder}/model.json is damaged or from another tool ({exc}).") from None
    config = load_config(folder / "config.toml") if (folder / "config.toml").is_file() else Config()
    config = config.merged({"model": {"arch": arch}})
    if family == "cnn" and card.model_settings:
        config = config.merged({"model": {"cnn": card.model_settings}})
    model = build_model(
        ArchSpec(arch, arch, family), len(classes), prep.size, config.model.cnn, config.model.head_dropout
    )
    try:
        state = load_file(str(folder / "model.safetensors"))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise RunError(f"{folder}/model.safetensors cannot be loaded: {str(exc).splitlines()[0]}") from None
    clf = ImageClassifier.from_config(config)
    from fastcls.device import pick_device

    clf.model, clf.classes, clf.preprocessing, clf.family = model.to(pick_device()).eval(), classes, prep, family
    clf.history = read_metrics(folder / "metrics.csv")
    clf.metrics = card.metrics
    clf.stopped, clf.planned_epochs = card.stopped, card.planned_epochs or len(clf.history)
    clf.distributed = card.get("distributed")
    return clf
