"""`train_run` and `resume_run`: a run trained into a hidden staging folder beside its final place and
published whole when it is done, or continued exactly where it stopped (fastcls.staging).

Under torchrun every process trains its share and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastcls.api import ImageClassifier
from fastcls.config import Config, flag, load_config
from fastcls.errors import RunError, TrainingDiverged
from fastcls.model_card import ModelCard
from fastcls.reporting import Reporter, as_reporter
from fastcls.runs import default_run_name, require_run
from fastcls.staging import StagedRun, final_of, partial_path

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from fastcls.train.distributed import World
    from fastcls.train.learner import Resume, Trainer

__all__ = ["resume_run", "train_run"]


def train_run(
    config: Config,
    reporter: Reporter | str | None = None,
    stop_after: int | None = None,
    callbacks: Sequence[Callable[[Trainer], Any]] = (),
) -> tuple[ImageClassifier, Path]:
    """Train as `config` says and write the run folder: what `fastcls train` does.

    The folder is `run.out`, else `run.root/run.name` (default name `<arch>-<date>-<time>`).
    Test accuracy is added to the metrics when the data has a test split. With `stop_after=N`
    (or Ctrl-C / SIGTERM, after the current batch) the run is saved after its last finished
    epoch and `resume_run` continues it exactly; an interrupt then raises `Interrupted`.
    If an earlier call for the same folder was killed (kill -9, OOM, power), this call continues it
    from its last finished epoch when the settings are the same, and refuses, naming the
    differences, when they are not. `callbacks`: factories of extra fastai callbacks, each called
    with the Trainer.
    """
    final = (
        Path(config.run.out)
        if config.run.out
        else Path(config.run.root) / (config.run.name or default_run_name(config.model.arch))
    )
    report = as_reporter(reporter)
    request = config.to_dict()
    config = config.merged({"run": {"out": str(final)}})  # trackers find the run by it (W&B's run id)

    def decide(staged: StagedRun) -> tuple[Resume | None, Config]:
        resume, chosen = None, config
        if staged.marker is not None:
            resume, chosen = _adopt_for(staged, request, report)
        if resume is None:
            staged.start(chosen.command, request)
        return resume, chosen

    return _staged_training(final, config.run.exist_ok, decide, report, stop_after, callbacks)


def resume_run(
    path: str | Path, reporter: Reporter | str | None = None, stop_after: int | None = None
) -> tuple[ImageClassifier, Path]:
    """Continue a run from its last finished epoch, exactly: one stopped by `stop_after`, Ctrl-C or
    SIGTERM (a run folder), or one killed outright (its `.NAME.partial` staging folder; `path` may
    name either).

    Model, optimiser, schedule position, RNG states, grad scaler and strategy phase (frozen
    groups, per-group LRs) come back as they were, so the result equals an uninterrupted run.

    >>> clf, path = resume_run("runs/digits-1")  # doctest: +SKIP
    """
    from fastcls.train.resume import resumable_epoch

    final = final_of(Path(path).expanduser())
    if not final.exists() and not partial_path(final).is_dir():
        require_run(final)  # says it does not exist
    report = as_reporter(reporter)

    def decide(staged: StagedRun) -> tuple[Resume | None, Config]:
        if staged.marker is not None and resumable_epoch(staged.staging)[0] is not None:
            return _adopt(staged, report)
        if not final.exists() and staged.marker is not None:
            raise RunError(
                f"{final} was interrupted before it finished an epoch ({resumable_epoch(staged.staging)[1]}), "
                "so there is nothing to resume; start it again with the same command."
            )
        resume, config = _stopped_run(final)
        staged.start("resume", config.to_dict())
        return resume, config

    return _staged_training(final, True, decide, report, stop_after)


def _staged_training(
    final: Path,
    exist_ok: bool,
    decide: Callable[[StagedRun], tuple[Resume | None, Config]],
    report: Reporter,
    stop_after: int | None,
    callbacks: Sequence[Callable[[Trainer], Any]] = (),
) -> tuple[ImageClassifier, Path]:
    """Open the run's staging folder, `decide` what to train (afresh or continued), train, commit.

    Under a distributed launcher (torchrun) every process trains, but only rank 0 opens, writes and
    commits the folder: its decision (the settings, the resume state) or its error reaches every
    process, and the others write nothing (fastcls.train.distributed).
    """
    import contextlib

    from fastcls.train.distributed import check_world_size, current_world

    world = current_world()
    if world is None:
        with StagedRun(final, exist_ok) as staged:
            resume, config = decide(staged)
            check_world_size(resume, 1)
            outcome = _train_into(staged, config, report, stop_after, resume, callbacks)
        return _finish(*outcome)
    held: list[StagedRun] = []
    with world.errors_once():
        with contextlib.ExitStack() as stack:

            def lead() -> tuple[Resume | None, Config]:
                held.append(stack.enter_context(StagedRun(final, exist_ok)))
                resume, config = decide(held[0])
                check_world_size(resume, world.size)
                return resume, config

            resume, config = world.from_leader(lead)
            outcome = _train_into(held[0] if held else None, config, report, stop_after, resume, callbacks, world)
        return _finish(*outcome, wrote=world.leader)


def _stopped_run(path: Path) -> tuple[Resume, Config]:
    """The resume point of a run folder saved by --stop-after, Ctrl-C or SIGTERM."""
    from fastcls.train.learner import Resume
    from fastcls.train.resume import read_resume_point

    folder = require_run(path)
    card = ModelCard.read(folder)
    card.require_classifier(folder)
    if not card.stopped:
        raise RunError(
            f"{folder} finished its {card.epochs} epochs, so there is nothing to resume; to train "
            f"further, fine-tune from it: fastcls finetune DATA {flag('arch')} {card.arch} {flag('weights')} {folder}"
        )
    state, history, states, epochs = read_resume_point(folder, card.checkpoints)
    config = load_config(folder / "config.toml").merged({"run": {"out": str(folder), "exist_ok": True}})
    return Resume(state, history, states, epochs), config


def _adopt(staged: StagedRun, report: Reporter) -> tuple[Resume, Config]:
    """Continue the run a kill interrupted in its staging folder, from its last finished epoch."""
    from fastcls.train.learner import Resume
    from fastcls.train.resume import read_resume_point

    state, history, states, epochs = read_resume_point(staged.staging)
    exist_ok = staged.final.exists()
    run = {"out": str(staged.final), "exist_ok": exist_ok}
    config = load_config(staged.staging / "config.toml").merged({"run": run})
    staged.adopt()
    report.info(
        f"resuming {staged.final}: it was interrupted after epoch {state['epoch']}; continuing with epoch "
        f"{int(state['epoch']) + 1} from {staged.staging}"
    )
    return Resume(state, history, states, epochs), config


def _adopt_for(staged: StagedRun, request: dict[str, Any], report: Reporter) -> tuple[Resume | None, Config]:
    """`train_run` found an interrupted attempt at its folder: continue it when it was started with the
    same settings, start afresh when it never finished an epoch, refuse when the settings differ."""
    from fastcls.config import settings_differences
    from fastcls.train.resume import resumable_epoch

    marker = staged.marker or {}
    epoch, why = resumable_epoch(staged.staging)
    config = Config.from_dict(request)
    if epoch is None:
        report.info(f"{staged.staging} holds an interrupted attempt with {why}; starting {staged.final} afresh")
        return None, config
    if marker.get("kind") == "resume":
        raise RunError(
            f"{staged.final} is a run being resumed that was interrupted after epoch {epoch}; continue it "
            f"with `fastcls train --resume {staged.final}`."
        )
    old = {k: v for k, v in (marker.get("request") or {}).items() if k != "run"}
    new = {k: v for k, v in json.loads(json.dumps(request)).items() if k != "run"}
    differ = settings_differences(old, new)
    if differ:
        raise RunError(
            f"{staged.final} has an interrupted run (after epoch {epoch}) started with other settings: "
            f"{'; '.join(differ[:4])}. Continue it with `fastcls train --resume {staged.final}`, remove it with "
            f"`fastcls runs clean --interrupted`, or choose another {flag('out')} or {flag('name')}."
        )
    return _adopt(staged, report)


def _train_into(
    staged: StagedRun | None,
    config: Config,
    report: Reporter,
    stop_after: int | None,
    resume: Resume | None,
    callbacks: Sequence[Callable[[Trainer], Any]] = (),
    world: World | None = None,
) -> tuple[ImageClassifier, Path]:
    """Train into the staging folder, then score the test split, write the run and commit it.

    In a distributed run (`world`) every rank trains; rank 0 (`staged` is its folder, None on the
    others) then writes and commits while the others wait for it, so none ends before the run is whole."""
    clf = ImageClassifier.from_config(config).fit(
        reporter=report,
        log_dir=staged.staging if staged is not None else None,
        stop_after=stop_after,
        resume=resume,
        callbacks=callbacks,
    )
    clf.resumed_after = int(resume.state["epoch"]) if resume is not None else None
    if world is None:
        return clf, _write_run(clf, staged)
    return clf, world.from_leader(lambda: _write_run(clf, staged))


def _write_run(clf: ImageClassifier, staged: StagedRun) -> Path:
    if clf._source is not None and "test" in clf._source.splits:
        result = clf.evaluate(split="test")
        clf.metrics.update(test_accuracy=result.accuracy, test_top5=result.top5, test_loss=result.loss)
    clf.write_files(staged.staging, staged.final)
    return staged.commit()


def _finish(clf: ImageClassifier, path: Path, wrote: bool = True) -> tuple[ImageClassifier, Path]:
    """After the commit: drop the resume file of a finished run (`wrote`: this process wrote it);
    raise for a NaN stop or an interrupt."""
    if not clf.stopped and wrote:
        from fastcls.train.resume import RESUME_FILE

        (path / "checkpoints" / RESUME_FILE).unlink(missing_ok=True)  # finished: nothing to resume
    if clf.diverged:
        raise TrainingDiverged(
            f"{clf.diverged}; training stopped and {path} holds the last good epoch "
            f"({clf.metrics['kept_epoch']}). Lower {flag('lr')} (try `{flag('lr')} auto`) or add "
            f"{flag('clip_grad')} 1."
        )
    if clf.stopped in ("SIGINT", "SIGTERM"):
        from fastcls.errors import Interrupted

        raise Interrupted(
            f"{clf.stopped} after epoch {len(clf.history)} of {clf.planned_epochs}; {path} holds it. "
            f"Continue exactly where it stopped with: {clf.resume_command(path)}"
        )
    return clf, path
