"""`lastlayer`: train only the last conv layer of the backbone (all its channels), with the engine."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..costs.baselines import lastlayer_plan
from ..sparse.engine import EnginePlan, LayerSelection, SparseEngine
from .options import MethodOptions
from .trained import Built, TrainedMethod, full_rows, private_copy


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
        up = lastlayer_plan(backbone.spec, int(x.shape[-1]), self.config.optimizer, self.batch_size)
        eplan = EnginePlan((LayerSelection(last.index, tuple(range(last.cout)), "out"),))
        return Built(SparseEngine(backbone, eplan), backbone, up, full_rows(backbone, [last.index]), eplan)
