"""SSL models around a backbone: lightly's heads, losses and momentum utilities, wired as lightly's
own examples wire them (examples/pytorch/byol.py, simsiam.py, simclr.py).

Every model has `backbone` (what the run saves), `loss(x0, x1)` on two views of a batch and
`momentum_update(m)` (a no-op without a target network).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["BYOL", "SimCLR", "SimSiam", "SslModel"]


class SslModel(nn.Module):
    """The common interface; subclasses set their heads and loss."""

    backbone: nn.Module

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def momentum_update(self, m: float) -> None:
        """Move the target network towards the online one (methods without a target: nothing)."""

    def target_modules(self) -> list[nn.Module]:
        """The momentum copies (they get no gradients); empty without a target network."""
        return []


class BYOL(SslModel):
    """Online backbone -> projection -> prediction; target = EMA of backbone and projection."""

    def __init__(self, backbone: nn.Module, dim: int, hidden: int, out: int = 256) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()

    def target_modules(self) -> list[nn.Module]:
        return [self.backbone_momentum, self.projection_head_momentum]

    def momentum_update(self, m: float) -> None:
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)

    def _online(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x)))

    @torch.no_grad()
    def _target(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x))

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        p0, p1 = self._online(x0), self._online(x1)
        z0, z1 = self._target(x0), self._target(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class SimSiam(SslModel):
    """Backbone -> projection -> prediction; the other view's projection is a stop-gradient target."""

    def __init__(self, backbone: nn.Module, dim: int, hidden: int) -> None:
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(dim, hidden, hidden)
        self.prediction_head = SimSiamPredictionHead(hidden, max(1, hidden // 4), hidden)
        self.criterion = NegativeCosineSimilarity()

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        z0, z1 = self.projection_head(self.backbone(x0)), self.projection_head(self.backbone(x1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))


class SimCLR(SslModel):
    """Backbone -> projection; NT-Xent pulls the two views together and pushes the batch apart."""

    def __init__(self, backbone: nn.Module, dim: int, hidden: int, out: int = 128) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, hidden, out)
        self.criterion = NTXentLoss(temperature=0.5)

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.projection_head(self.backbone(x0)), self.projection_head(self.backbone(x1)))
