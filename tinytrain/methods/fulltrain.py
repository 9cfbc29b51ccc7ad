"""`fulltrain`: fine-tune the whole backbone (every conv weight and BN scale/shift; BN statistics frozen)
with plain PyTorch autograd, batch 100 by default (paper 3.2) — the baseline as usually run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..costs.baselines import fulltrain_plan
from ..models.backbone import Backbone
from .options import MethodOptions
from .trained import Built, TrainedMethod, private_copy


@dataclass(frozen=True)
class FullTrainOptions(MethodOptions):
    """`fulltrain` takes the options every method takes (methods/options.py), nothing more."""

    method: ClassVar[str] = "fulltrain"


class DenseModel(nn.Module):
    """A backbone trained densely: every parameter (or those given) requires grad."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone.eval()
        self.params = [p for n, p in backbone.named_parameters() if not n.startswith("classifier")]
        for n, p in backbone.named_parameters():
            p.requires_grad_(not n.startswith("classifier"))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.params

    def sync(self) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


class FullTrainMethod(TrainedMethod):
    name = "fulltrain"
    default_batch_size = 100
    options_class = FullTrainOptions

    def _build(self, x: torch.Tensor, y: torch.Tensor) -> Built:
        backbone = private_copy(self.source_backbone)
        up = fulltrain_plan(backbone.spec, int(x.shape[-1]), self.config.optimizer, self.batch_size)
        return Built(DenseModel(backbone), backbone, up)
