"""`TrainedMethod`: the fit/plan/report skeleton shared by every method that fine-tunes.

A subclass only says what it trains (`_build`); this class runs the P>M>F loop, chooses the learning
rate when asked, writes the weights back into a plain backbone and fills the report.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from abc import abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn

from ..costs.model import backward_macs, backward_memory
from ..costs.plan import UpdatePlan
from ..models.backbone import Backbone
from ..sparse.accounting import predicted_saved_bytes
from ..sparse.engine import EnginePlan
from .base import AdaptReport, Method, Predictor, support_prototypes
from .common import check_support, finetune, split_support, storages_of

LR_CANDIDATES = (1e-4, 1e-3, 1e-2)


@dataclass
class Built:
    """What a method trains for one support set."""

    model: nn.Module                 # has trainable_parameters(), sync(), forward (and maybe prefix/suffix)
    backbone: Backbone               # the private backbone that ends up holding the adapted weights
    update_plan: UpdatePlan          # for the Table-2 cost model
    rows: list[dict]                 # report plan rows
    engine_plan: EnginePlan | None = None
    selection_seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    before_step: object = None


class TrainedMethod(Method):
    default_batch_size = 1

    @property
    def batch_size(self) -> int:
        b = self.config.batch_size or self.default_batch_size
        if b < 1:
            raise ValueError(f"batch_size must be at least 1 (got {b})")
        return int(b)

    @abstractmethod
    def _build(self, x: torch.Tensor, y: torch.Tensor) -> Built:
        """Decide what to train (selection, policies) and set up the trainable model."""

    # -- reporting ----------------------------------------------------------------------------
    def _report(self, built: Built, n: int) -> AdaptReport:
        spec = built.backbone.spec
        up = built.update_plan
        mem = backward_memory(spec, up)
        rep = AdaptReport(method=self.name, plan=built.rows, predicted_memory_bytes=int(mem.total),
                          backward_macs=int(backward_macs(spec, up)),
                          selection_seconds=built.selection_seconds)
        extra = dict(built.extra)
        extra["update_plan"] = up.to_dict()
        extra["memory_breakdown"] = mem.to_dict()
        extra["batch_size"] = self.batch_size
        extra["trainable_parameters"] = int(sum(p.numel() for p in built.model.trainable_parameters()))
        if built.engine_plan is not None:
            extra["engine_plan"] = built.engine_plan.to_dict()
            extra["predicted_saved_bytes"] = predicted_saved_bytes(spec, built.engine_plan,
                                                                   min(self.batch_size, n), up.resolution)
        rep.extra = extra
        return rep

    def plan(self, support_x: torch.Tensor, support_y: torch.Tensor) -> AdaptReport:
        x, y = check_support(support_x, support_y)
        self.report = self._report(self._build(x, y), len(x))
        return self.report

    # -- training -----------------------------------------------------------------------------
    def _choose_lr(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict]:
        train, val = split_support(y, self.config.seed)
        cands = [float(c) for c in self.config.options.get("lr_candidates", LR_CANDIDATES)]
        iters = int(self.config.options.get("lr_search_iterations", self.config.iterations))
        scores = {}
        for lr in cands:
            cfg = dataclasses.replace(self.config, lr=lr, iterations=iters)
            m = type(self)(self.source_backbone, cfg, self.head)
            pred = m.fit(x[train], y[train])
            scores[lr] = pred.accuracy(x[val], y[val])
        best = max(cands, key=lambda c: (scores[c], -c))   # ties: the smaller rate
        return best, {str(k): v for k, v in scores.items()}

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        x, y = check_support(support_x, support_y)
        lr, lr_scores = self.config.lr, None
        if lr is None:
            lr, lr_scores = self._choose_lr(x, y)
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0 (got {lr}); 0 means no update")
        built = self._build(x, y)
        t0 = time.perf_counter()
        if lr == 0:     # a valid choice of the lr grid (P>M>F): the plan is made, nothing is trained
            stats = {"measured_saved_bytes": 0, "seconds_per_iteration": [], "losses": []}
        else:
            stats = finetune(built.model, x, y, self.head, self.config, lr, self.batch_size,
                             exclude_storages=storages_of(built.model), before_step=built.before_step,
                             prefix_batch_size=int(self.config.options.get("prefix_batch_size", 64)))
        train_seconds = time.perf_counter() - t0
        backbone = built.backbone.eval()
        for p in backbone.parameters():
            p.requires_grad_(True)
        protos = support_prototypes(backbone, x, y,
                                    batch_size=int(self.config.options.get("prefix_batch_size", 64)))
        rep = self._report(built, len(x))
        rep.measured_saved_bytes = int(stats["measured_saved_bytes"])
        rep.train_seconds = train_seconds
        sp = stats["seconds_per_iteration"]
        rep.extra.update(lr=lr, lr_search=lr_scores, final_loss=stats["losses"][-1] if stats["losses"] else None,
                         seconds_per_iteration=(sum(sp) / len(sp)) if sp else 0.0, iterations=len(sp))
        self.report = rep
        return Predictor(backbone, protos, self.head)


def full_rows(backbone: Backbone, indices: list[int], axis: str = "out") -> list[dict]:
    """Plan rows for layers trained in full."""
    layers = backbone.conv_layers()
    rows = []
    for i in indices:
        total = layers[i].cout if axis == "out" or layers[i].groups > 1 else layers[i].cin
        rows.append({"layer": i, "name": layers[i].name, "channels_updated": total, "channels_total": total,
                     "score": None})
    return rows


def private_copy(backbone: Backbone) -> Backbone:
    bb = copy.deepcopy(backbone).eval()
    return bb
