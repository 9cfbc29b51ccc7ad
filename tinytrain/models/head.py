"""The ProtoNet head: a cosine classifier over class prototypes (paper_spec.md 3.2; P>M>F's form).

logits = scale * (cos(f(x), c_k) + bias), prototypes c_k = class means of support features. Used by the
offline stages (tinytrain.offline) and by every adaptation method (tinytrain.methods).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ..errors import BadInput


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, ways: int | None = None) -> torch.Tensor:
    """Mean feature per class -> (ways, D). Every class must have at least one example."""
    ways = ways if ways is not None else int(labels.max()) + 1
    onehot = F.one_hot(labels, ways).to(features.dtype)           # (N, ways)
    counts = onehot.sum(0)
    if bool((counts == 0).any()):
        missing = [int(i) for i in torch.nonzero(counts == 0).flatten()]
        raise BadInput(f"classes {missing} have no support example; every class needs at least one")
    return (onehot.t() @ features) / counts[:, None]


class CosineClassifier(nn.Module):
    """Scaled cosine similarity to prototypes, with a learnable scale (init 10) and bias (init 0)."""

    def __init__(self, scale: float = 10.0, bias: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def forward(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(features, dim=-1) @ F.normalize(prototypes, dim=-1).t()
        return self.scale * (cos + self.bias)


def protonet_loss(head: CosineClassifier, support_f: torch.Tensor, support_y: torch.Tensor,
                  query_f: torch.Tensor, query_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the query against support prototypes; returns (loss, accuracy)."""
    protos = class_prototypes(support_f, support_y)
    logits = head(query_f, protos)
    loss = F.cross_entropy(logits, query_y)
    acc = (logits.argmax(-1) == query_y).float().mean()
    return loss, acc

