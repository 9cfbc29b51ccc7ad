"""`TrainedMethod`: the fit/plan/report skeleton shared by every method that fine-tunes.

A subclass only says what it trains (`_build`); this class runs the P>M>F loop, chooses the learning
rate when asked, writes the weights back into a plain backbone and fills the report, including the
time of each phase of the adaptation (`report.extra["phases"]`, what `bench e2e` tabulates).

Options read here (`self.opts`, the method's options object; fields of `MethodOptions`, methods/options.py):
  augment_pool   P > 0: draw P augmented views of the support set once and cache their prefix outputs
                 instead of augmenting afresh every iteration (changes the training; see FineTuner)  [0]
  cache_budget   bytes (or "64MB") the support cache and the pool may hold; "none" = unbounded    [64MB]
  prefix_batch_size, lr_candidates, lr_search_iterations (and augment_p, proto_grad in the FineTuner)
"""
from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn

from ..costs.model import CostModel, backward_macs
from ..costs.plan import LayerUpdate, UpdatePlan
from ..models.backbone import Backbone
from ..sparse.accounting import predicted_saved_bytes, stage_input_elems
from ..sparse.engine import EnginePlan, PrefixCache, SparseEngine, private_backbone
from .base import AdaptReport, Method, Predictor, engine_form, plan_rows
from .common import FineTuner, check_support, plan_caches, split_support, storages_of
from .options import DEFAULT_CACHE_BUDGET, LR_CANDIDATES  # noqa: F401  (their home is methods/options.py)
from ..errors import BadInput


@dataclass
class Built:
    """What a method trains for one support set: the model that trains it and the one plan it follows."""

    model: nn.Module                 # has trainable_parameters(), sync(), forward (and maybe prefix/suffix)
    backbone: Backbone               # the private backbone that ends up holding the adapted weights
    update_plan: UpdatePlan          # every trained tensor (sparse plans name their channels)
    scores: dict[int, float] = field(default_factory=dict)   # the selection's score per chosen layer
    selection_seconds: float = 0.0
    extra: dict = field(default_factory=dict)   # diagnostics for the report (method-specific)
    before_step: object = None
    after_step: object = None        # after_step(optimizer), once per iteration (TinyTrain's dynamic channels)
    budgets: tuple[int | None, int | None] = (None, None)   # (memory bytes, backward MACs) worked to
    fisher_potential: dict[int, float] | None = None

    @property
    def engine_plan(self) -> EnginePlan | None:
        return engine_form(self.update_plan)


def sparse_plan(spec, layers: list[LayerUpdate], biases, batch_size: int, optimizer: str,
                resolution: int) -> UpdatePlan:
    """A sparse `UpdatePlan` whose layers name their channels (what the engine trains)."""
    if any(u.channels is None for u in layers):
        raise BadInput("a sparse plan for the engine names the channels of every layer")
    return UpdatePlan(spec.name, list(layers), list(biases), batch_size, optimizer, "sparse", resolution)


class TrainedMethod(Method):
    default_batch_size = 1

    @property
    def precision(self) -> str:
        """The precision the plan's memory is priced at (AdaptConfig.precision)."""
        return self.config.precision

    @property
    def batch_size(self) -> int:
        b = self.config.batch_size or self.default_batch_size
        if b < 1:
            raise BadInput(f"batch_size must be at least 1 (got {b})")
        return int(b)

    @abstractmethod
    def _build(self, x: torch.Tensor, y: torch.Tensor) -> Built:
        """Decide what to train (selection, policies) and set up the trainable model."""

    # -- caches -------------------------------------------------------------------------------
    @property
    def cache_budget(self) -> int | None:
        """Bytes the support cache and the augmentation pool may hold (None: unbounded)."""
        return self.opts.cache_budget

    @property
    def augment_pool(self) -> int:
        return self.opts.augment_pool

    def _reset_cache(self) -> None:
        self._cache: PrefixCache | None = None
        self._cache_x: torch.Tensor | None = None
        self._cache_seconds = 0.0

    def support_cache(self, engine: SparseEngine, x: torch.Tensor) -> PrefixCache | None:
        """The support set's prefix output for `engine`, computed once per task and continued (not
        recomputed) for an engine whose trained part starts later, e.g. the fine-tuning engine after the
        Fisher pass. None when it does not fit the cache budget (then callers recompute the prefix)."""
        spec, res = engine.backbone.spec, int(x.shape[-1])
        if engine.first_block <= -1:
            return PrefixCache(-1, x)
        need = len(x) * 4 * stage_input_elems(spec, engine.first_block, res)
        budget = self.cache_budget
        if budget is not None and need > budget:
            return None
        t0 = time.perf_counter()
        chunk = self.opts.prefix_batch_size
        memo = getattr(self, "_cache", None)
        if memo is not None and self._cache_x is x and memo.block <= engine.first_block:
            cache = engine.prefix_from(memo, chunk)
        else:
            cache = engine.support_prefix(x, chunk)
        self._cache, self._cache_x = cache, x
        self._cache_seconds = getattr(self, "_cache_seconds", 0.0) + time.perf_counter() - t0
        return cache

    # -- reporting ----------------------------------------------------------------------------
    def _report(self, built: Built, n: int, image_shape: tuple[int, ...]) -> AdaptReport:
        spec = built.backbone.spec
        up = built.update_plan
        mem = CostModel(spec, up.resolution, self.precision).backward_memory(up)
        extra = dict(built.extra)
        extra["memory_breakdown"] = mem.to_dict()
        extra["batch_size"] = self.batch_size
        extra["trainable_parameters"] = int(sum(p.numel() for p in built.model.trainable_parameters()))
        eplan = built.engine_plan
        if eplan is not None:
            extra["predicted_saved_bytes"] = predicted_saved_bytes(spec, eplan, min(self.batch_size, n), up.resolution)
        extra["caches"] = plan_caches(built.model, n, tuple(image_shape), self.augment_pool, self.config.iterations,
                                      self.cache_budget).to_dict()
        mem_budget, macs_budget = built.budgets
        return AdaptReport(method=self.name, rows=plan_rows(spec, up, built.scores), update_plan=up,
                           predicted_memory_bytes=int(mem.total), backward_macs=int(backward_macs(spec, up)),
                           selection_seconds=built.selection_seconds, memory_budget=mem_budget,
                           compute_budget_macs=macs_budget, fisher_potential=built.fisher_potential,
                           options=self.applied_options(), extra=extra)

    def plan(self, support_x: torch.Tensor, support_y: torch.Tensor) -> AdaptReport:
        x, y = check_support(support_x, support_y)
        self._reset_cache()
        built = self._build(x, y)
        self._reset_cache()
        self.report = self._report(built, len(x), x.shape[1:])
        return self.report

    # -- training -----------------------------------------------------------------------------
    def _choose_lr(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict]:
        train, val = split_support(y, self.config.seed)
        cands = list(self.opts.lr_candidates)
        iters = self.opts.lr_search_iterations
        iters = self.config.iterations if iters is None else iters
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
            raise BadInput(f"learning rate must be >= 0 (got {lr}); 0 means no update")
        t_start = time.perf_counter()
        self._reset_cache()
        built = self._build(x, y)
        built_seconds = time.perf_counter() - t_start
        prefix_in_build = self._cache_seconds
        cache = self._cache
        self._reset_cache()      # the tuner holds the continued cache; the Fisher pass's copy is released
        t0 = time.perf_counter()
        tuner = FineTuner(built.model, x, y, self.head, self.config, lr, self.batch_size,
                          exclude_storages=storages_of(built.model), before_step=built.before_step,
                          prefix_batch_size=self.opts.prefix_batch_size,
                          support_cache=cache, cache_budget=self.cache_budget,
                          augment_pool=self.augment_pool if lr > 0 else 0, options=self.opts)
        del cache
        for _ in range(self.config.iterations if lr > 0 else 0):   # lr 0: the plan is made, nothing trained
            tuner.step()
            if built.after_step is not None:
                built.after_step(tuner.opt)
        built.model.sync()
        train_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        protos = tuner.prototypes()
        proto_seconds = time.perf_counter() - t1
        backbone = built.backbone.eval()
        for p in backbone.parameters():
            p.requires_grad_(True)
        stats = tuner.stats()
        rep = self._report(built, len(x), x.shape[1:])
        rep.measured_saved_bytes = int(stats["measured_saved_bytes"])
        rep.train_seconds = train_seconds
        sp = stats["seconds_per_iteration"]
        fisher = float(built.extra.get("fisher_seconds") or 0.0)
        rep.lr, rep.final_loss = lr, (stats["losses"][-1] if stats["losses"] else None)
        rep.extra.update(lr_search=lr_scores, seconds_per_iteration=(sum(sp) / len(sp)) if sp else 0.0, iterations=len(sp),
                         caches=stats["caches"],
                         phases={"prefix": prefix_in_build + tuner.cache_seconds, "fisher": fisher,
                                 "selection": max(0.0, built_seconds - fisher - prefix_in_build),
                                 "training": train_seconds - tuner.cache_seconds, "prototypes": proto_seconds})
        self.report = rep
        return Predictor(backbone, protos, self.head)


def private_copy(backbone: Backbone) -> Backbone:
    """The adaptation's own copy of the backbone (fit never alters the caller's), in eval mode."""
    return private_backbone(backbone).eval()
