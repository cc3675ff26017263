"""Sensitivity: a decisive bottleneck ranks first under every method, the model is left exactly as
it was, the same seed gives the same scores, and `read_sensitive` turns FILE:K into tensor names."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

import fastcls
from fastcls.errors import ConfigError, FastclsError, RunError
from fastcls.models.groups import layer_groups
from fastcls.studies.sensitivity import (
    CSV_COLUMNS,
    CSV_NAME,
    METHODS,
    PER,
    check_sensitive_names,
    rank_parameters,
    read_sensitive,
    sensitivity,
)


class Bottleneck(nn.Module):
    """Digits through a 2-unit bottleneck, the decisive tensor by construction.

    logits = read(squeeze(x)) + side(channel means) + 0.02 * wide(x). `read` is a fixed buffer
    (10 directions on a circle), so every bit of class information the model uses passes through
    `squeeze.weight`; `side` sees only three numbers per image, and `wide`, the largest tensor, is
    damped and frozen at its random init (a frozen tensor, like a fine-tuned model's backbone).
    """

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Linear(3 * 64, 2)
        self.side = nn.Linear(3, 10)
        self.wide = nn.Linear(3 * 64, 10)
        angles = torch.arange(10) * (2 * math.pi / 10)
        self.register_buffer("read", 4 * torch.stack([angles.cos(), angles.sin()], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return self.squeeze(flat) @ self.read.T + self.side(x.mean((2, 3))) + 0.02 * self.wide(flat)


@pytest.fixture(scope="module")
def decisive() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The bottleneck net trained briefly on 1400 digits, and 397 held-out digits in batches of 64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = ((torch.tensor(digits.images, dtype=torch.float32) / 16 - 0.3) / 0.4)[:, None].expand(-1, 3, -1, -1)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order].contiguous(), y[order]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = Bottleneck()
        net.wide.requires_grad_(False)
        optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], 1e-2)
        for _ in range(150):
            pick = torch.randint(0, 1400, (128,))
            loss = nn.functional.cross_entropy(net(x[pick]), y[pick])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.zero_grad(set_to_none=True)
    return net, [(x[i : i + 64], y[i : i + 64]) for i in range(1400, len(y), 64)]


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [p.grad for p in model.parameters()],
        "rng": torch.get_rng_state(),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for name, value in before["state"].items():
        assert torch.equal(after["state"][name], value), f"{name} changed"
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(a is b for a, b in zip(after["grad"], before["grad"], strict=True))
    assert torch.equal(after["rng"], before["rng"])


@pytest.mark.parametrize("method", list(METHODS))
def test_the_decisive_bottleneck_ranks_first_and_the_model_is_untouched(decisive, method):
    net, batches = decisive
    net.train()  # measured in eval mode, handed back in train mode
    before = snapshot(net)
    result = rank_parameters(net, batches, method, candidates=6)
    assert_unchanged(net, before)
    assert result.names(1) == ["squeeze.weight"]
    first, second = result.rows[0], result.rows[1]
    assert first.norm_score == 1.0 and second.score < first.score / 5  # first by a wide margin
    assert sorted(result.names()) == sorted(name for name, _ in net.named_parameters())
    assert [row.rank for row in result.rows] == list(range(1, 7))
    assert result.images == 397 and result.batches == len(batches) and result.scored == 6
    by_module = rank_parameters(net, batches, method, per="module", candidates=6)
    assert by_module.names(1) == ["squeeze"] and set(by_module.names()) == {"squeeze", "side", "wide"}
    assert_unchanged(net, before)


def test_module_scores_are_sums_of_tensor_scores(decisive):
    net, batches = decisive
    tensors = {row.name: row.score for row in rank_parameters(net, batches, "fisher").rows}
    modules = {row.name: row.score for row in rank_parameters(net, batches, "fisher", per="module").rows}
    for module in ("squeeze", "side", "wide"):
        assert modules[module] == pytest.approx(tensors[f"{module}.weight"] + tensors[f"{module}.bias"])


def test_fisher_is_the_sum_of_squared_per_image_gradients(decisive):
    net, batches = decisive
    x, y = batches[0][0][:5], batches[0][1][:5]
    expected = 0.0
    for i in range(5):
        loss = nn.functional.cross_entropy(net.eval()(x[i : i + 1]), y[i : i + 1])
        expected += float(torch.autograd.grad(loss, net.squeeze.bias)[0].square().sum())
    scores = {row.name: row.score for row in rank_parameters(net, [(x, y)], "fisher").rows}
    assert scores["squeeze.bias"] == pytest.approx(expected, rel=1e-5)


def test_ablation_scores_only_the_grad_norm_leaders(decisive):
    net, batches = decisive
    leaders = rank_parameters(net, batches, "grad-norm").names()
    result = rank_parameters(net, batches, "ablation", candidates=2)
    assert result.scored == 2 and set(result.names(2)) == set(leaders[:2])
    assert [row.score for row in result.rows[2:]] == [None] * 4
    assert result.names()[2:] == [name for name in leaders if name not in result.names(2)]


@pytest.mark.parametrize("method", list(METHODS))
def test_same_seed_same_scores_on_a_run_left_unchanged(trained_run, method):
    clf = fastcls.load(trained_run)
    clf.model.train()
    clf.model.features.block1.conv.weight.requires_grad_(False)
    before = snapshot(clf.model)
    first = sensitivity(clf, method=method, batches=2, bs=8, top=3)
    second = sensitivity(trained_run, method=method, batches=2, bs=8, top=3)
    assert_unchanged(clf.model, before)
    assert [(r.name, r.score) for r in first.rows] == [(r.name, r.score) for r in second.rows]
    assert first.images == 16 and first.split == "valid" and first.data == "builtin:digits"
    assert first.names() == second.names() and len(first.rows) == len(list(clf.model.parameters()))


def test_the_seed_picks_the_images(trained_run):
    clf = fastcls.load(trained_run)
    a = sensitivity(clf, batches=1, bs=16, seed=0)
    b = sensitivity(clf, batches=1, bs=16, seed=1)
    assert [r.score for r in a.rows] != [r.score for r in b.rows]


@pytest.mark.parametrize("per", PER)
def test_every_per_covers_every_parameter_once(trained_run, per):
    clf = fastcls.load(trained_run)
    result = sensitivity(clf, per=per, batches=1, bs=8)
    assert sum(row.numel for row in result.rows) == sum(p.numel() for p in clf.model.parameters())
    if per == "group":
        assert sorted(result.names()) == sorted(group.name for group in layer_groups(clf.model))
    if per == "tensor":
        assert all(row.group for row in result.rows)


def test_save_writes_csv_and_both_plots(trained_run, tmp_path):
    result = sensitivity(trained_run, method="ablation", batches=1, bs=16, top=3)
    written = result.save(tmp_path / CSV_NAME, top=3)
    assert written["top"] == tmp_path / "plots" / "sensitivity_top.png"
    assert written["depth"] == tmp_path / "plots" / "sensitivity_depth.png"
    for path in written.values():
        assert path.stat().st_size > 0
    assert written["top"].read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(written["csv"].open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(result.rows)
    assert rows[0]["name"] == result.rows[0].name and rows[-1]["score"] == ""  # not a candidate
    assert read_sensitive(f"{tmp_path}:3") == result.names(3)


@pytest.mark.parametrize(("option", "value"), [("method", "saliency"), ("per", "layer")])
def test_unknown_choice_names_the_choices(trained_run, option, value):
    with pytest.raises(ConfigError) as error:
        sensitivity(trained_run, **{option: value})
    message = str(error.value)
    assert repr(value) in message
    assert all(name in message for name in (METHODS if option == "method" else PER))


# -- read_sensitive ------------------------------------------------------------------------------
@pytest.fixture
def sensitivity_file(decisive, tmp_path):
    net, batches = decisive
    result = rank_parameters(net, batches, "grad-norm")
    path = result.to_csv(tmp_path / "run" / CSV_NAME)
    return path, result


def test_read_sensitive_returns_the_top_k_names(sensitivity_file):
    path, result = sensitivity_file
    assert read_sensitive(f"{path}:2") == result.names(2) == ["squeeze.weight", "squeeze.bias"]
    assert read_sensitive(f"{path.parent}:1") == ["squeeze.weight"]  # the run folder
    assert read_sensitive(f"{path}:6") == result.names()
    check_sensitive_names(read_sensitive(f"{path}:6"), result.names())


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        ("{path}", ConfigError, ["FILE:K"]),
        ("{path}:two", ConfigError, ["'two'", "whole number"]),
        ("{path}:0", ConfigError, ["'0'"]),
        ("{path}:-1", ConfigError, ["'-1'"]),
        ("{path}:7", ConfigError, ["top 7", "only 6"]),
        ("{path}.missing:2", RunError, ["does not exist", "fastcls sensitivity"]),
        ("{empty}:2", RunError, ["has no sensitivity.csv", "fastcls sensitivity"]),
    ],
)
def test_read_sensitive_errors_say_what_and_how(sensitivity_file, tmp_path, spec, error, words):
    path, _ = sensitivity_file
    (tmp_path / "empty").mkdir()
    spec = spec.format(path=path, empty=tmp_path / "empty")
    with pytest.raises(error) as raised:
        read_sensitive(spec)
    assert all(word in str(raised.value) for word in words), str(raised.value)


@pytest.mark.parametrize("per", ["module", "group"])
def test_read_sensitive_refuses_module_and_group_files(decisive, tmp_path, per):
    net, batches = decisive
    if per == "group":
        net = nn.Sequential(net)  # layer groups need children
    path = rank_parameters(net, batches, per=per).to_csv(tmp_path / CSV_NAME)
    with pytest.raises(ConfigError, match=f"ranks {per}s.*--per tensor"):
        read_sensitive(f"{path}:1")


def test_read_sensitive_refuses_a_csv_of_something_else(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,accuracy\n1,0.5\n")
    with pytest.raises(ConfigError, match="not a sensitivity file"):
        read_sensitive(f"{path}:1")


def test_check_sensitive_names_names_the_unknown_tensors():
    check_sensitive_names(["a.weight"], ["a.weight", "a.bias"])
    with pytest.raises(FastclsError, match=r"conv_stem\.weight.*another --arch"):
        check_sensitive_names(["conv_stem.weight", "a.weight"], ["a.weight", "a.bias"])


def test_per_group_needs_layer_groups():
    model = nn.Linear(4, 2)  # parameters on the model itself: no groups to sum over
    batches = [(torch.ones(2, 4), torch.tensor([0, 1]))]
    with pytest.raises(ConfigError, match=r"no layer groups.*--per tensor"):
        rank_parameters(model, batches, per="group")
    assert rank_parameters(model, batches, per="module").names() == ["(model)"]
