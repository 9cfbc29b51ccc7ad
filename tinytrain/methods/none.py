"""`none`: no on-device training; ProtoNet nearest-centroid on the given backbone."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import AdaptReport, Method, Predictor, support_prototypes
from .options import MethodOptions, option


@dataclass(frozen=True)
class NoneOptions(MethodOptions):
    """`none` takes the options every method takes; only prefix_batch_size matters to it (it trains nothing).
    Its default chunk is 256 images (its one pass embeds the support set, as `support_prototypes` always
    did), where the trained methods use 64."""

    method: ClassVar[str] = "none"

    prefix_batch_size: int = option(256, "images per chunk of the one embedding pass over the support set", low=1)


class NoneMethod(Method):
    name = "none"
    options_class = NoneOptions

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        backbone = self.fresh_backbone()
        protos = support_prototypes(backbone, support_x, support_y, batch_size=self.opts.prefix_batch_size)
        self.report = AdaptReport(method=self.name, options=self.applied_options())
        return Predictor(backbone, protos, self.head)
