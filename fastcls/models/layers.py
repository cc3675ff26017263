"""Where to look inside a model: the penultimate features, the last conv stage, the first conv.

One rule per model family, so `interpret` and the training-time embedding snapshots agree on
what "penultimate" means: timm models say it themselves (`forward_head(pre_logits=True)`); any
other model (the scratch `cnn`, torchvision) feeds its penultimate vector into its last Linear.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastcls.config import flag
from fastcls.errors import ConfigError, did_you_mean

__all__ = [
    "cam_layer",
    "first_conv",
    "penultimate",
    "preserved",
    "require_map",
    "reshape_tokens",
    "resolve_layer",
]


def _is_timm(model: Any) -> bool:
    return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))


def _last_linear(model: Any):
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            f"{type(model).__name__} has no Linear classifier layer, so its penultimate features cannot be found."
        )
    return linears[-1]


def penultimate(model: Any, x: Any) -> Any:
    """The (N, D) features that the classifier layer turns into logits, for a normalised batch `x`.

    >>> penultimate(model, x).shape  # doctest: +SKIP
    torch.Size([8, 256])
    """
    if _is_timm(model):
        return model.forward_head(model.forward_features(x), pre_logits=True).flatten(1)
    captured: list[Any] = []
    handle = _last_linear(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1)


def resolve_layer(model: Any, name: str) -> Any:
    """The module called `name` (as in `model.named_modules()`), or a ConfigError with close names."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    from torch import nn

    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    shown = ", ".join(convs[-8:]) if convs else ", ".join(list(modules)[1:9])
    raise ConfigError(
        f"layer {name!r} is not a module of this model.{did_you_mean(name, list(modules)[1:])} "
        f"Its last conv layers are: {shown}; pass one of them (or a stage such as a block name) to --layer."
    )


def cam_layer(model: Any, family: str, x: Any) -> str:
    """The name of the last convolutional stage whose output still has a spatial map (more than
    1x1 for input `x`): where Grad-CAM and guided backprop look by default.

    Candidates: the scratch cnn's blocks before their pooling (twice the resolution of the block
    output); a timm model's feature stages (`feature_info`); anything else, every module in
    forward order. At small inputs the last stage can be 1x1 (a CAM of one cell says nothing),
    so the deepest candidate with a real map wins.
    """
    from torch import nn

    candidates: list[str] | None = None
    if family == "cnn" and hasattr(model, "features"):
        candidates = []
        for block_name, block in model.features.named_children():
            inner = [n for n, m in block.named_children() if not isinstance(m, nn.MaxPool2d)]
            candidates.append(f"features.{block_name}.{inner[-1]}" if inner else f"features.{block_name}")
    info = getattr(model, "feature_info", None)
    if candidates is None and isinstance(info, list) and info:
        candidates = [entry["module"] for entry in info if isinstance(entry, dict) and "module" in entry]
    modules = dict(model.named_modules())
    shapes = _output_shapes(model, x, [n for n in (candidates or modules) if n in modules and n])
    spatial = [name for name, shape in shapes if _has_map(shape)]
    if not spatial:
        raise ConfigError(
            f"no layer of this model has a spatial output larger than 1x1 at {tuple(x.shape[-2:])} input; "
            f"name one with --layer (or train at a larger {flag('size')})."
        )
    return spatial[-1]


def require_map(model: Any, name: str, x: Any) -> None:
    """A ConfigError unless layer `name` outputs a spatial map (what a CAM needs) for input `x`."""
    shapes = _output_shapes(model, x, [name])
    if not shapes or not _has_map(shapes[0][1]):
        shape = shapes[0][1] if shapes else "nothing"
        raise ConfigError(
            f"layer {name!r} outputs {shape}, not a spatial map larger than 1x1, so it has no CAM; "
            f"pass a convolutional stage to --layer (default: {cam_layer(model, '', x)})."
        )


def _has_map(shape: tuple[int, ...]) -> bool:
    """A (N, C, H, W) map larger than 1x1, or ViT tokens (N, T, C) that form at least a 2x2 grid."""
    import math

    if len(shape) == 4:
        return shape[2] * shape[3] > 1
    return len(shape) == 3 and math.isqrt(shape[1]) >= 2


def _output_shapes(model: Any, x: Any, names: list[str]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of the named modules for one image, in the order they ran."""
    import torch

    order: list[tuple[str, tuple[int, ...]]] = []
    modules = dict(model.named_modules())
    handles = []
    for name in names:

        def record(_m: Any, _a: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                order.append((name, tuple(out.shape)))

        handles.append(modules[name].register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x[:1])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return order


def first_conv(model: Any) -> tuple[str, Any]:
    """(name, module) of the first Conv2d: the filters that look at pixels."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ConfigError(f"{type(model).__name__} has no Conv2d layer, so there are no first-layer filters to draw.")


def reshape_tokens(tensor: Any) -> Any:
    """Vision-transformer tokens (N, T, C) -> (N, C, s, s) maps, dropping class/register tokens;
    spatial maps pass through. Lets Grad-CAM run on a ViT block."""
    import math

    if tensor.dim() != 3:
        return tensor
    side = math.isqrt(tensor.shape[1])
    grid = tensor[:, tensor.shape[1] - side * side :, :]
    return grid.reshape(tensor.shape[0], side, side, tensor.shape[2]).permute(0, 3, 1, 2)


@contextmanager
def preserved(model: Any) -> Iterator[Any]:
    """Yield `model` in eval mode with every parameter requiring grad and no in-place activations;
    afterwards its train/eval flag, requires_grad flags, .grad tensors and `inplace` flags are
    exactly as before (the weights are never written)."""
    modules = list(model.modules())
    training = [m.training for m in modules]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    inplace = [(m, m.inplace) for m in modules if isinstance(getattr(m, "inplace", None), bool)]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(True)
        for module, _ in inplace:
            module.inplace = False
        yield model
    finally:
        for module, flag in zip(modules, training, strict=True):
            module.training = flag
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.grad = grad
            p.requires_grad_(flag)
        for module, flag in inplace:
            module.inplace = flag
