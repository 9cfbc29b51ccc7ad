"""`none`: no on-device training; ProtoNet nearest-centroid on the given backbone."""
from __future__ import annotations

import torch

from .base import Method, Predictor, support_prototypes


class NoneMethod(Method):
    name = "none"

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        backbone = self.fresh_backbone()
        protos = support_prototypes(backbone, support_x, support_y,
                                    batch_size=int(self.config.options.get("prefix_batch_size", 256)))
        return Predictor(backbone, protos, self.head)
