"""Ensembles: each vote method on hand-made probabilities with known ties, then real members on digits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import fastcls
import fastcls.studies.ensemble.study as ensemble_module
from fastcls.errors import ConfigError, DataError
from fastcls.export.predictors import load_predictor
from fastcls.studies.ensemble import VOTE_METHODS, Ensemble, combine, fit_weights, load_ensemble
from tests_support import write_class_folders

# Three members, three classes, four images; member 2 is preferred on ties.
# image 0: every method ties all three classes -> the preferred member's top class, 2
# image 1: two votes for class 1, but member 2 is sure of class 0 (and rules out class 1)
# image 2: soft means tie exactly (0.5, 0.5) -> member 2 prefers 0; geometric picks 1
# image 3: weighted (1, 1, 2) ties 0.5/0.5 -> member 2 prefers 1 (not the lower index 0)
PROBS = np.array(
    [
        [[0.5, 0.3, 0.2], [0.45, 0.55, 0.0], [0.7, 0.3, 0.0], [0.9, 0.1, 0.0]],
        [[0.2, 0.5, 0.3], [0.45, 0.55, 0.0], [0.2, 0.8, 0.0], [0.5, 0.5, 0.0]],
        [[0.3, 0.2, 0.5], [1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]],
    ]
)
WEIGHTS = {"weighted": [1, 1, 2]}
EXPECTED = {
    "hard": ([2, 1, 0, 0], [[1 / 3] * 3, [1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0], [2 / 3, 1 / 3, 0]]),
    "soft": ([2, 0, 0, 0], [[1 / 3] * 3, [1.9 / 3, 1.1 / 3, 0], [0.5, 0.5, 0], [1.7 / 3, 1.3 / 3, 0]]),
    "weighted": ([2, 0, 0, 1], [[0.325, 0.3, 0.375], [0.725, 0.275, 0], [0.525, 0.475, 0], [0.5, 0.5, 0]]),
    "geometric": ([2, 0, 1, 0], None),  # scores checked against the formula below
}


def test_every_vote_method_has_a_hand_checked_case():
    assert set(EXPECTED) == set(VOTE_METHODS)


@pytest.mark.parametrize("method", list(VOTE_METHODS))
def test_each_method_exactly_on_hand_made_members(method):
    predicted, expected_scores = EXPECTED[method]
    scores, ranked = combine(PROBS, method, WEIGHTS.get(method), prefer=2)
    assert ranked[:, 0].tolist() == predicted
    if expected_scores is None:  # geometric: the normalised geometric mean
        product = np.clip(PROBS, 1e-12, None).prod(0) ** (1 / 3)
        expected_scores = product / product.sum(-1, keepdims=True)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-9)
    assert ranked[0].tolist() == [2, 0, 1]  # the full three-way tie is ranked by member 2's probabilities
    assert sorted(ranked[1].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("method", list(VOTE_METHODS))
def test_ties_follow_the_preferred_member(method):
    # two members that exactly mirror each other tie every method; the preferred one decides
    probs = np.array([[[0.7, 0.3]], [[0.3, 0.7]]])
    weights = [1, 1] if VOTE_METHODS[method].weighted else None
    assert combine(probs, method, weights, prefer=0)[1][0, 0] == 0
    assert combine(probs, method, weights, prefer=1)[1][0, 0] == 1


def test_hard_tie_when_the_preferred_member_voted_for_neither():
    # votes 0, 0, 1, 1, 2: classes 0 and 1 tie; member 4 voted 2 but finds 1 more likely than 0
    probs = np.array(
        [
            [[0.8, 0.1, 0.1]],
            [[0.8, 0.1, 0.1]],
            [[0.1, 0.8, 0.1]],
            [[0.1, 0.8, 0.1]],
            [[0.1, 0.3, 0.6]],
        ]
    )
    scores, ranked = combine(probs, "hard", prefer=4)
    assert ranked[0].tolist() == [1, 0, 2]
    np.testing.assert_allclose(scores, [[0.4, 0.4, 0.2]])


def test_weights_only_for_weighted_and_checked():
    with pytest.raises(ConfigError, match="weights are for --method weighted"):
        combine(PROBS, "soft", [1, 1, 1])
    with pytest.raises(ConfigError, match="3 non-negative numbers"):
        combine(PROBS, "weighted", [1, -1, 1])
    with pytest.raises(ConfigError, match="Did you mean: soft"):
        combine(PROBS, "sfot")


def test_fit_weights_prefers_the_informative_member_and_never_loses_to_equal_weights():
    truth = np.array([0, 1, 1, 0])
    sure = np.eye(2)[truth] * 0.98 + 0.01
    uniform = np.full((4, 2), 0.5)
    np.testing.assert_allclose(fit_weights(np.stack([uniform, sure]), truth), [0, 1], atol=1e-4)

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(3, 200))
    labels = rng.integers(0, 5, 200)
    probs[1, np.arange(200), labels] += 1.0  # member 1 knows something
    probs /= probs.sum(-1, keepdims=True)

    def log_loss(weights):
        mix = np.tensordot(np.asarray(weights) / np.sum(weights), probs, axes=1)
        return -np.log(mix[np.arange(200), labels]).mean()

    fitted = fit_weights(probs, labels)
    assert fitted.sum() == pytest.approx(1) and (fitted >= 0).all() and fitted.argmax() == 1
    assert log_loss(fitted) < log_loss([1, 1, 1])
    for other in ([0.2, 0.6, 0.2], [0, 1, 0], [0.1, 0.8, 0.1]):
        assert log_loss(fitted) <= log_loss(other) + 1e-9


# -- real members ---------------------------------------------------------------------------------
def _train(
    folder: Path, data: str | Path, size: int, blocks: int, seed: int, epochs: int = 2, fraction: float = 1
) -> Path:
    """A small cnn (8 filters, dense 32) on `data` at `size` px, saved at `folder`."""
    config = fastcls.Config().merged(
        {
            "model": {"arch": "cnn", "cnn": {"blocks": blocks, "filters": 8, "dense": 32}},
            "data": {"source": str(data), "size": size, "fraction": fraction},
            "train": {"epochs": epochs, "seed": seed},
            "run": {"out": str(folder)},
        }
    )
    return fastcls.train_run(config, reporter="quiet")[1]


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("members")
    return [
        _train(root / "small8", "builtin:digits", 8, 2, 0, fraction=0.25),
        _train(root / "mid16", "builtin:digits", 16, 2, 1, fraction=0.25),
    ]


def _permuted_copy(run: Path, folder: Path, order: list[int]) -> Path:
    """The same model with its output units, and model.json's class list, in another order."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(run, folder)
    state = load_file(str(run / "model.safetensors"))
    for key in ("head.out.weight", "head.out.bias"):
        state[key] = state[key][order].contiguous()
    save_file(state, str(folder / "model.safetensors"))
    card = json.loads((run / "model.json").read_text())
    card["classes"] = [card["classes"][i] for i in order]
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def test_members_are_aligned_by_class_name(members, tmp_path):
    order = [3, 1, 4, 0, 9, 2, 6, 5, 8, 7]
    shuffled = _permuted_copy(members[0], tmp_path / "shuffled", order)
    assert json.loads((shuffled / "model.json").read_text())["classes"] != [str(i) for i in range(10)]
    result = Ensemble([members[0], shuffled], cache_dir=tmp_path / "cache").vote("builtin:digits", method="soft")
    assert result.agreement[0][1] == 1.0
    assert result.members[0].accuracy == result.members[1].accuracy == result.ensemble.accuracy
    assert result.members[0].log_loss == pytest.approx(result.members[1].log_loss, abs=1e-6)
    assert result.members[0].accuracy == pytest.approx(fastcls.load(members[0]).evaluate(split="test").accuracy)


def test_class_mismatch_names_the_classes(members, tmp_path):
    four = _train(tmp_path / "four", write_class_folders(tmp_path / "digits4", per_class=10, classes=4), 8, 2, 0)
    with pytest.raises(DataError) as caught:
        Ensemble([members[0], four])
    message = str(caught.value)
    assert "lacks 4, 5, 6, 7, 8, 9" in message and str(four) in message
    with pytest.raises(DataError, match="classes the members never saw: 4, 5"):
        Ensemble([four, _permuted_copy(four, tmp_path / "four-b", [1, 0, 3, 2])]).vote(
            write_class_folders(tmp_path / "digits6", per_class=5, classes=6), split="valid"
        )


def test_bad_arguments_are_user_errors(members, tmp_path):
    with pytest.raises(ConfigError, match="at least two run folders"):
        Ensemble([members[0]])
    with pytest.raises(ConfigError, match="given twice"):
        Ensemble([members[0], members[0]])
    ensemble = Ensemble(members, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="gives 3 weight"):
        ensemble.vote("builtin:digits", method="weighted", weights="1,2,3")
    with pytest.raises(ConfigError, match="--weights is for --method weighted"):
        ensemble.vote("builtin:digits", method="hard", weights="1,2")
    with pytest.raises(ConfigError, match="not one of the members"):
        ensemble.vote("builtin:digits", prefer=tmp_path)
    with pytest.raises(DataError, match="no 'tset' split; it has train, valid, test"):
        ensemble.vote("builtin:digits", split="tset")


def test_cache_is_reused_across_methods_and_invalidated_by_new_weights(members, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(members[1], copy)
    runs = [members[0], copy]
    calls = []
    real = ensemble_module.run_member

    def counted(*args, **kwargs):
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(ensemble_module, "run_member", counted)

    first = Ensemble(runs, cache_dir=tmp_path / "cache").vote("builtin:digits", method="hard")
    assert [m.cached for m in first.members] == [False, False] and len(calls) == 4  # test and valid, 2 members
    second = Ensemble(runs, cache_dir=tmp_path / "cache").vote("builtin:digits", method="geometric", prefer=copy)
    assert [m.cached for m in second.members] == [True, True] and len(calls) == 4
    assert [m.accuracy for m in second.members] == [m.accuracy for m in first.members]

    state = load_file(str(copy / "model.safetensors"))
    state["head.out.bias"] = state["head.out.bias"] + 5 * (torch.arange(10) == 3)  # favour class 3
    save_file(state, str(copy / "model.safetensors"))
    third = Ensemble(runs, cache_dir=tmp_path / "cache").vote("builtin:digits", method="geometric", prefer=copy)
    assert [m.cached for m in third.members] == [True, False] and len(calls) == 5
    assert third.members[1].accuracy < second.members[1].accuracy


def test_tta_averages_each_image_with_its_mirror(members, tmp_path):
    clf = fastcls.load(members[1])
    files = sorted(fastcls.resolve_source("builtin:digits").split("test")[i].path for i in range(0, 359, 60))
    mirrored = []
    for i, file in enumerate(files):
        mirrored.append(tmp_path / f"{i}.png")
        ImageOps.mirror(Image.open(file)).save(mirrored[-1])
    plain, _ = clf.predict_proba(files)
    flipped, _ = clf.predict_proba(mirrored)
    tta, kept = ensemble_module.run_member(clf, files, True, None, "tta")
    assert kept.all()
    np.testing.assert_allclose(tta, (plain + flipped) / 2, atol=1e-5)
    result = Ensemble(members, cache_dir=tmp_path / "cache").vote("builtin:digits", method="soft", tta=True)
    assert result.tta and not any(m.cached for m in result.members)


@pytest.mark.parametrize("method", list(VOTE_METHODS))
def test_saved_vote_predicts_like_the_vote(members, tmp_path, method):
    result = Ensemble(members).vote("builtin:digits", method=method, out=tmp_path / "vote")
    if method == "soft":
        assert result.ensemble.accuracy >= min(m.accuracy for m in result.members)
    if not VOTE_METHODS[method].weighted:
        assert result.weights == [0.5, 0.5] and result.weights_source == "equal"
    assert (result.ensemble.log_loss is None) == (method == "hard")
    card = json.loads((tmp_path / "vote" / "ensemble.json").read_text())
    assert card["members"] == [str(m.resolve()) for m in members] and card["method"] == method
    assert card["scores"]["ensemble"]["accuracy"] == result.ensemble.accuracy
    clf = load_predictor(tmp_path / "vote" / "ensemble.json")
    assert clf.classes == result.classes
    predictions = clf.predict(result.paths[::20])
    assert [p.label for p in predictions] == [result.classes[i] for i in result.ranked[::20, 0]]
    assert [p.path for p in predictions] == result.paths[::20]
    assert isinstance(load_predictor(members[0]), fastcls.ImageClassifier)


def test_auto_weights_come_from_valid_and_damaged_json_is_refused(members, tmp_path):
    ensemble = Ensemble(members, cache_dir=tmp_path / "cache")
    result = ensemble.vote("builtin:digits", method="weighted", weights="auto")
    valid = ensemble._predict_split(fastcls.resolve_source("builtin:digits"), "valid", False, None)
    assert result.weights == pytest.approx(fit_weights(valid.probs, valid.labels).tolist())
    assert result.weights_source.startswith("auto") and sum(result.weights) == pytest.approx(1)
    given = ensemble.vote("builtin:digits", method="weighted", weights=[1, 3])
    assert given.weights == [0.25, 0.75] and given.weights_source == "given"
    bad = tmp_path / "ensemble.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(fastcls.FastclsError, match=r"not an ensemble\.json"):
        load_ensemble(bad)
