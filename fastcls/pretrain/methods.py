"""Self-supervised methods: each one entry of `METHODS`, built from lightly's heads, losses and views.

An entry names the SSL model (backbone plus lightly's projection/prediction heads, loss and, for
BYOL, the momentum target network) and its two-view augmentation (lightly's transforms). A new
method is one more `Method(...)` here and one `SslModel` subclass in `fastcls.pretrain.models`.

Nothing here imports torch or lightly at import time, so `fastcls --help` can list the methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastcls.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from fastcls.pretrain.models import SslModel

__all__ = ["METHODS", "SMALL_IMAGE", "Method", "get_method", "view_settings"]

# Below this input size the views follow lightly's own CIFAR-10 settings: no Gaussian blur (at 32 px
# a sigma of up to 2 px wipes out the object) and colour jitter at half strength.
SMALL_IMAGE = 64


@dataclass(frozen=True)
class Method:
    """One self-supervised method.

    `model(backbone, feature_dim, hidden_dim)` builds the SSL model around a backbone;
    `views(settings)` builds lightly's two-view transform (PIL image -> two normalised tensors)
    from `view_settings(...)`. `hidden_dim` and `min_scale` are lightly's defaults for the method.
    """

    name: str
    summary: str
    hidden_dim: int
    min_scale: float
    target_network: bool  # a momentum (EMA) copy of the backbone and projection head
    model: Callable[[nn.Module, int, int], SslModel]
    views: Callable[[dict[str, Any]], Callable[[Any], Sequence[Any]]]


def view_settings(
    size: int, mean: Sequence[float], std: Sequence[float], min_scale: float, hflip: float = 0.5
) -> dict[str, Any]:
    """The keyword arguments every lightly view transform takes, adapted to small images."""
    settings: dict[str, Any] = {
        "input_size": size,
        "min_scale": min_scale,
        "hf_prob": hflip,
        "normalize": {"mean": list(mean), "std": list(std)},
    }
    if size < SMALL_IMAGE:
        settings.update(gaussian_blur=0.0, cj_strength=0.5)
    return settings


def _byol_model(backbone: nn.Module, dim: int, hidden: int) -> SslModel:
    from fastcls.pretrain.models import BYOL

    return BYOL(backbone, dim, hidden)


def _byol_views(settings: dict[str, Any]):
    from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform

    view2 = dict(settings)
    if "gaussian_blur" in settings:  # view 2 has its own (lower) blur probability; small images have none
        view2["gaussian_blur"] = 0.0
    return BYOLTransform(BYOLView1Transform(**settings), BYOLView2Transform(**view2))


def _simsiam_model(backbone: nn.Module, dim: int, hidden: int) -> SslModel:
    from fastcls.pretrain.models import SimSiam

    return SimSiam(backbone, dim, hidden)


def _simsiam_views(settings: dict[str, Any]):
    from lightly.transforms.simsiam_transform import SimSiamTransform

    return SimSiamTransform(**settings)


def _simclr_model(backbone: nn.Module, dim: int, hidden: int) -> SslModel:
    from fastcls.pretrain.models import SimCLR

    return SimCLR(backbone, dim, hidden)


def _simclr_views(settings: dict[str, Any]):
    from lightly.transforms.simclr_transform import SimCLRTransform

    return SimCLRTransform(**settings)


METHODS: Registry[Method] = Registry(
    "method",
    {
        "byol": Method(
            "byol",
            "BYOL: predict a momentum target network's projection of the other view (no negatives)",
            hidden_dim=4096,
            min_scale=0.08,
            target_network=True,
            model=_byol_model,
            views=_byol_views,
        ),
        "simsiam": Method(
            "simsiam",
            "SimSiam: BYOL without the target network (stop-gradient only)",
            hidden_dim=2048,
            min_scale=0.2,
            target_network=False,
            model=_simsiam_model,
            views=_simsiam_views,
        ),
        "simclr": Method(
            "simclr",
            "SimCLR: contrastive NT-Xent loss, the other images of the batch are negatives",
            hidden_dim=2048,
            min_scale=0.08,
            target_network=False,
            model=_simclr_model,
            views=_simclr_views,
        ),
    },
)


def get_method(name: str) -> Method:
    """The registry entry for `name`, or a ConfigError with the close matches."""
    return METHODS.lookup(name)
