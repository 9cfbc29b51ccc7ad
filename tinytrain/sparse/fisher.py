"""Fisher information on activations (paper Eq. 2) and the per-layer Fisher potential.

    Delta_o = 1/(2N) * sum_n ( sum_d a_nd * g_nd )^2,      P = sum_o Delta_o

a is a candidate layer's output activation (the ConvBNAct output, i.e. after BN and ReLU6 where the
layer has one; option tap point documented in docs/engine.md), g = dL_n/da for sample n. The loss is
the fine-tuning loss: ProtoNet cosine cross-entropy of each support image against the (detached)
support prototypes, summed over samples, so g is a per-sample gradient and the result does not
depend on the micro-batch size. One pass over the whole support set, micro-batched; layers below
the earliest candidate run without autograd, and the rest uses the memory-light engine functions.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import progress
from ..models.backbone import Backbone
from ..models.head import CosineClassifier, class_prototypes
from .engine import EnginePlan, PrefixCache, SparseEngine, private_backbone
from ..errors import BadInput


@dataclass
class FisherResult:
    channel: dict[int, torch.Tensor]   # layer index -> Delta per output channel (C,)
    n_samples: int
    batch_size: int
    seconds: float                     # the pass itself, without computing a shared support cache

    @property
    def potential(self) -> dict[int, float]:
        """Fisher potential per layer: P_i = sum over channels of Delta."""
        return {i: float(d.sum()) for i, d in self.channel.items()}

    def to_dict(self) -> dict:
        return {"potential": {str(i): p for i, p in self.potential.items()},
                "channel": {str(i): d.tolist() for i, d in self.channel.items()},
                "n_samples": self.n_samples, "batch_size": self.batch_size, "seconds": self.seconds}


def fisher_information(backbone: Backbone, x: torch.Tensor, y: torch.Tensor, layers: list[int],
                       head: CosineClassifier | None = None, batch_size: int = 1,
                       prefix_batch_size: int = 64,
                       support_cache: Callable[[SparseEngine, torch.Tensor], PrefixCache | None] | None = None
                       ) -> FisherResult:
    """Per-channel Fisher information (Eq. 2) of the output activations of `layers`.

    `batch_size` is the micro-batch of the backward pass (the memory-relevant part); the constant
    prefix and the prototypes are computed without autograd in chunks of `prefix_batch_size`.
    `support_cache(engine, x)` (a `TrainedMethod`'s) gives the support set's prefix output, computed
    once per task and reused by the fine-tuning after the selection, or None when it must not be held
    (then the prefix is recomputed per micro-batch); its time is not counted in `seconds`.
    """
    if not layers:
        raise BadInput("give at least one candidate layer for the Fisher pass")
    if batch_size < 1:
        raise BadInput("the Fisher micro-batch size must be at least 1")
    t0 = time.perf_counter()
    engine = SparseEngine(backbone, EnginePlan(biases=(min(layers),)), owns_backbone=False)
    head = private_backbone(head) if head is not None else CosineClassifier()
    for p in head.parameters():
        p.requires_grad_(False)
    n = len(x)
    shared = 0.0
    if support_cache is not None:
        t1 = time.perf_counter()
        cache = support_cache(engine, x)
        h = cache.h if cache is not None else None
        shared = time.perf_counter() - t1
    else:
        h = engine.support_prefix(x, prefix_batch_size).h

    def prefix_of(i: int, j: int) -> torch.Tensor:
        return h[i:j] if h is not None else engine.prefix(x[i:j])

    # One micro-batch holding the whole support set computes the (detached) prototypes from the very
    # features it back-propagates; smaller micro-batches need them first, from a pass without autograd.
    single = batch_size >= n
    protos = None
    if not single:
        with torch.no_grad():
            feats = torch.cat([engine.suffix(prefix_of(i, i + prefix_batch_size))
                               for i in range(0, n, prefix_batch_size)])
            protos = class_prototypes(feats, y)
    acc = {i: torch.zeros(engine.mods[i].conv.out_channels, device=engine.mods[i].conv.weight.device)
           for i in layers}

    def tap(i: int, act: torch.Tensor) -> None:
        # The hook must not capture `act` itself: act -> hook -> act is a cycle through C++ that Python's
        # garbage collector cannot see, and it would keep every micro-batch's graph alive.
        value = act.detach()

        def hook(g: torch.Tensor) -> None:
            acc[i].add_((value * g).sum((2, 3)).pow(2).sum(0))
        act.register_hook(hook)

    engine.taps = {i: tap for i in layers}
    with torch.enable_grad():
        for i in range(0, n, batch_size):
            f = engine.suffix(prefix_of(i, i + batch_size))
            p = class_prototypes(f.detach(), y) if single else protos
            F.cross_entropy(head(f, p), y[i:i + batch_size], reduction="sum").backward()
            progress.step("Fisher pass", min(i + batch_size, n), n)
    engine.taps = {}
    channel = {i: acc[i] / (2 * n) for i in layers}
    return FisherResult(channel, n, batch_size, time.perf_counter() - t0 - shared)
