"""`lastlayer`: train only the last conv layer of the backbone (all its channels), with the engine."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..costs.plan import LayerUpdate
from ..sparse.engine import SparseEngine
from .options import MethodOptions
from .trained import Built, TrainedMethod, private_copy, sparse_plan


@dataclass(frozen=True)
class LastLayerOptions(MethodOptions):
    """`lastlayer` takes the options every method takes (methods/options.py), nothing more."""

    method: ClassVar[str] = "lastlayer"


class LastLayerMethod(TrainedMethod):
    name = "lastlayer"
    default_batch_size = 1
    options_class = LastLayerOptions

    def _build(self, x: torch.Tensor, y: torch.Tensor) -> Built:
        backbone = private_copy(self.source_backbone)
        last = backbone.conv_layers()[-1]
        up = sparse_plan(backbone.spec, [LayerUpdate(last.index, 1.0, "out", list(range(last.cout)))], [],
                         self.batch_size, self.config.optimizer, int(x.shape[-1]))
        return Built(SparseEngine(backbone, up), backbone, up)
