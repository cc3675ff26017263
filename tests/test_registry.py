"""The one Registry type: every extension point is one, and an unknown name reads the same everywhere."""

from __future__ import annotations

import importlib

import pytest

from fastcls.errors import ConfigError, DataError
from fastcls.registry import Registry

# every extension point: (module, registry name); each must be a Registry with at least one entry
EXTENSION_POINTS = [
    ("fastcls.models.registry", "ALIASES"),
    ("fastcls.models.scratch", "ACTIVATIONS"),
    ("fastcls.models.scratch", "ORGANISATIONS"),
    ("fastcls.train.strategies", "STRATEGIES"),
    ("fastcls.train.optim", "OPTIMIZERS"),
    ("fastcls.train.optim", "SCHEDULES"),
    ("fastcls.train.tracking", "TRACKERS"),
    ("fastcls.data.augment", "PRESETS"),
    ("fastcls.data.builtin", "BUILTINS"),
    ("fastcls.studies.sensitivity", "METHODS"),
    ("fastcls.studies.ensemble", "VOTE_METHODS"),
    ("fastcls.interpret.registry", "PLOTS"),
    ("fastcls.studies.recipes", "STEPS"),
    ("fastcls.studies.scaling", "INITS"),
    ("fastcls.studies.sweep", "PARAM_TYPES"),
    ("fastcls.studies.sweep", "SAMPLERS"),
    ("fastcls.studies.sweep", "PRUNERS"),
    ("fastcls.studies.sweep", "METRICS"),
    ("fastcls.export.formats", "FORMATS"),
    ("fastcls.pretrain.methods", "METHODS"),
]


@pytest.mark.parametrize(("module", "name"), EXTENSION_POINTS)
def test_every_extension_point_is_a_registry_with_one_error(module: str, name: str) -> None:
    registry = getattr(importlib.import_module(module), name)
    assert isinstance(registry, Registry) and len(registry.names()) >= 1
    first = registry.names()[0]
    assert registry.lookup(first) is registry[first] and registry.check(first) == first
    typo = first[:-1] + ("x" if first[-1] != "x" else "y")
    with pytest.raises(registry.error) as info:
        registry.lookup(typo)
    message = str(info.value)
    assert f"{registry.kind} {typo!r} is not one of {', '.join(registry.names())}" in message
    assert first in message.partition("Did you mean:")[2]


def test_register_as_call_or_decorator_keeps_order_and_refuses_twice() -> None:
    shapes = Registry("shape", {"square": 4})
    shapes.register("triangle", 3)

    @shapes.register("circle")
    def circle() -> int:
        return 0

    assert shapes.names() == ("square", "triangle", "circle") and shapes["circle"] is circle
    assert dict(shapes) == {"square": 4, "triangle": 3, "circle": circle}
    with pytest.raises(ValueError, match="'square' is registered twice"):
        shapes.register("square", 5)
    assert shapes["square"] == 4


def test_lookup_message_prefix_hint_and_error_type() -> None:
    sizes = Registry("size", {"small": 1, "large": 2}, hint=" (or a number)", error=DataError)
    with pytest.raises(DataError) as info:
        sizes.lookup("smal", prefix="step 2: ")
    assert str(info.value) == "step 2: size 'smal' is not one of small, large (or a number). Did you mean: small?"
    with pytest.raises(ConfigError, match=r"size 'huge' is not one of small, large \(or a number\)\.$"):
        sizes.lookup("huge", error=ConfigError)
    assert "huge" not in sizes and sizes.get("huge") is None
