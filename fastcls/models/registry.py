"""Architecture names: fastcls aliases, `cnn`, and every timm or torchvision model.

A new alias is one line in `ALIASES`. Resolution order: `cnn`, alias, timm name (with or without
a pretrained tag), torchvision name (or `torchvision:NAME` to force torchvision). timm and
torchvision are imported only when a name needs them, so `cnn` runs start fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from fastcls.config import CnnConfig
from fastcls.data.images import Preprocessing
from fastcls.errors import ArchError, did_you_mean
from fastcls.registry import Registry

__all__ = [
    "ALIASES",
    "FAMILIES",
    "ArchSpec",
    "build_model",
    "default_preprocessing",
    "resolve_arch",
]

ALIASES: Registry[str] = Registry(
    "alias",
    {
        "resnext101": "resnext101_32x8d.fb_swsl_ig1b_ft_in1k",
        "resnext50": "resnext50_32x4d.a1h_in1k",
        "resnet18": "resnet18.a1_in1k",
        "resnet34": "resnet34.a1_in1k",
        "resnet50": "resnet50.a1_in1k",
        "resnet101": "resnet101.a1h_in1k",
        "resnet152": "resnet152.a1h_in1k",
        "efficientnet_lite0": "tf_efficientnet_lite0.in1k",
        "efficientnet_lite1": "tf_efficientnet_lite1.in1k",
        "efficientnet_lite2": "tf_efficientnet_lite2.in1k",
        "efficientnet_b0": "efficientnet_b0.ra_in1k",
        "mobilenet": "mobilenetv3_large_100.ra_in1k",
        "mobilenet_small": "mobilenetv3_small_100.lamb_in1k",
        "mobilenetv2": "mobilenetv2_100.ra_in1k",
        "vgg13": "vgg13_bn.tv_in1k",
        "vgg16": "vgg16_bn.tv_in1k",
        "vit_tiny": "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        "vit_small": "vit_small_patch16_224.augreg_in21k_ft_in1k",
        "vit_base": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        "convnext_tiny": "convnext_tiny.fb_in22k_ft_in1k",
    },
)
FAMILIES = ("cnn", "timm", "torchvision")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class ArchSpec:
    """A resolved architecture: `name` is what timm/torchvision build, `family` says which."""

    requested: str
    name: str
    family: str


@cache
def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models())


def resolve_arch(requested: str) -> ArchSpec:
    """Map a user's arch name to a buildable model, or raise ArchError with close matches.

    >>> resolve_arch("resnext101").name
    'resnext101_32x8d.fb_swsl_ig1b_ft_in1k'
    """
    name = requested.strip()
    if name == "cnn":
        return ArchSpec(requested, "cnn", "cnn")
    for prefix in ("torchvision:", "tv:"):
        if name.startswith(prefix):
            bare = name.removeprefix(prefix)
            if bare in _torchvision_names():
                return ArchSpec(requested, bare, "torchvision")
            raise ArchError(f"{bare!r} is not a torchvision model.{did_you_mean(bare, _torchvision_names())}")
    name = ALIASES.get(name, name)
    import timm

    if timm.is_model(name):
        return ArchSpec(requested, name, "timm")
    if name in _torchvision_names():
        return ArchSpec(requested, name, "torchvision")
    choices = ["cnn", *ALIASES, *timm.list_models(), *_torchvision_names()]
    hint = did_you_mean(requested, choices) or " Run `fastcls models` to list names."
    raise ArchError(f"unknown architecture {requested!r}.{hint}")


def _timm_cfg(spec: ArchSpec) -> dict[str, Any]:
    import timm

    cfg = timm.get_pretrained_cfg(spec.name)
    if cfg is None:
        model = timm.create_model(spec.name, pretrained=False)
        return dict(model.pretrained_cfg)
    return cfg.to_dict()


def default_preprocessing(spec: ArchSpec, size: int | None, native_size: int) -> Preprocessing:
    """The input pipeline the weights expect (timm's pretrained cfg), or one fitted to the data.

    `size` overrides the cfg's input size; a scratch `cnn` defaults to the images' own median
    side (`native_size`, capped at 224) and squishes rather than crops, so nothing is cut off.
    Its mean/std are replaced by the training set's statistics once the data is decoded.
    """
    if spec.family == "cnn":
        return Preprocessing(size=size or min(native_size, 224), resize="squish")
    if spec.family == "timm":
        cfg = _timm_cfg(spec)
        interpolation = cfg.get("interpolation") or "bilinear"
        return Preprocessing(
            size=size or int(cfg.get("input_size", (3, 224, 224))[-1]),
            mean=tuple(cfg.get("mean") or _IMAGENET[0]),
            std=tuple(cfg.get("std") or _IMAGENET[1]),
            interpolation=interpolation if interpolation != "random" else "bilinear",
            resize="crop",
            crop_pct=float(cfg.get("crop_pct") or 0.875),
        )
    return _torchvision_preprocessing(spec.name, size)


def _torchvision_preprocessing(name: str, size: int | None) -> Preprocessing:
    """The eval transform of the model's default torchvision weights (e.g. resnet50's V2 weights resize
    to 232 and crop 224; EfficientNet resizes bicubic), or ImageNet's 224/0.875/bilinear without weights."""
    import torchvision

    try:
        keywords = dict(torchvision.models.get_model_weights(name).DEFAULT.transforms.keywords)
    except (ValueError, KeyError, AttributeError):
        keywords = {}
    crop = int(keywords.get("crop_size", 224))
    resize = keywords.get("resize_size", round(crop / 0.875))
    resize = int(resize[0] if isinstance(resize, list | tuple) else resize)
    mode = getattr(keywords.get("interpolation"), "value", "bilinear")
    return Preprocessing(
        size=size or crop,
        mean=tuple(keywords.get("mean", _IMAGENET[0])),
        std=tuple(keywords.get("std", _IMAGENET[1])),
        interpolation=mode if mode in ("nearest", "bilinear", "bicubic") else "bilinear",
        resize="crop",
        crop_pct=crop / resize,
    )


def build_model(
    spec: ArchSpec, num_classes: int, size: int, cnn: CnnConfig | None = None, head_dropout: float | None = None
):
    """A randomly initialised torch module with a `num_classes` output layer.

    `head_dropout` is timm's `drop_rate` (dropout before the classifier) or torchvision's
    `dropout` argument; None keeps the architecture's default. The cnn has its own `cnn.dropout`.
    """
    return _build(spec, num_classes, size, cnn, head_dropout)


def _build(spec: ArchSpec, num_classes: int, size: int, cnn: CnnConfig | None, head_dropout: float | None):
    if spec.family == "cnn":
        from fastcls.models.scratch import ConfigurableCNN

        return ConfigurableCNN(cnn or CnnConfig(), num_classes, size)
    if spec.family == "timm":
        import timm

        kwargs: dict[str, Any] = {} if head_dropout is None else {"drop_rate": head_dropout}
        if _timm_cfg(spec).get("fixed_input_size"):
            kwargs["img_size"] = size
        try:
            return timm.create_model(spec.name, pretrained=False, num_classes=num_classes, **kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ArchError(f"timm could not build {spec.name!r} at {size}px: {exc}") from None
    import torchvision

    extra = {} if head_dropout is None else {"dropout": head_dropout}
    try:
        return torchvision.models.get_model(spec.name, weights=None, num_classes=num_classes, **extra)
    except TypeError as exc:
        if extra and "dropout" in str(exc):
            raise ArchError(
                f"torchvision's {spec.name} has no dropout setting; drop --dropout or use the timm version."
            ) from None
        raise ArchError(f"torchvision could not build {spec.name!r}: {exc}") from None
    except (ValueError, RuntimeError) as exc:
        raise ArchError(f"torchvision could not build {spec.name!r}: {exc}") from None
