"""`tinytrain`: task-adaptive sparse update (paper Algorithm 1).

Fisher pass over the support set -> Fisher potential per candidate layer -> multi-objective score
(Eq. 3) -> greedy layer selection under the memory and compute budgets with top-K channels per
layer -> sparse fine-tuning of exactly those channels with the memory-real engine.

Options: `TinyTrainOptions` below (its fields, defaults and docs; also docs/engine.md), besides those every
method takes (methods/options.py). They are read through `self.opts`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from ..costs.model import CostModel, compute_budget_macs
from ..costs.plan import LayerUpdate, UpdatePlan, channel_count
from ..models.specs import conv_layers
from ..sparse.accounting import predicted_saved_bytes
from ..sparse.engine import EnginePlan, SparseEngine
from ..sparse.fisher import fisher_information
from ..sparse.selection import (LayerChoice, fisher_mass_ratio, layer_scores, select_channels,
                                select_layers)
from .options import MethodOptions, _Reject, option
from .trained import Built, TrainedMethod, private_copy, sparse_plan
from ..errors import BadInput

DEFAULT_MEMORY_BUDGET = 1024 * 1024     # "around 1 MB" (paper 4.5), 1 MiB like the paper's MB
DEFAULT_COMPUTE_BUDGET = 0.15           # of FullTrain's backward MACs


def _check_plan(plan: dict | None) -> None:
    """A `fixed_plan` is an `UpdatePlan` JSON (what `static_plan` writes: layers with index and channels,
    bias_layers), or the earlier static-plan shape (weights, biases) that older run folders hold."""
    if plan is None:
        return
    earlier = "weights" in plan or "biases" in plan
    weights = plan.get("weights" if earlier else "layers", [])
    biases = plan.get("biases" if earlier else "bias_layers", [])
    ints = lambda xs: isinstance(xs, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in xs)
    if not isinstance(weights, list) or not ints(biases) or not all(
            isinstance(w, dict) and isinstance(w.get("index"), int) and ints(w.get("channels"))
            and w.get("axis", "out") in ("out", "in") for w in weights):
        raise _Reject


def fixed_update_plan(plan: dict, spec, resolution: int, batch_size: int, optimizer: str
                      ) -> tuple[UpdatePlan, dict[int, float]]:
    """A `fixed_plan` option value as the `UpdatePlan` this adaptation trains (at its own resolution, batch
    size and optimizer), with the scores it was chosen by (0 where it records none)."""
    if "weights" in plan or "biases" in plan:        # the earlier shape: {"weights": [...], "biases": [...]}
        plan = {"layers": plan.get("weights", []), "bias_layers": plan.get("biases", [])}
    if plan.get("model", spec.name) != spec.name:
        raise BadInput(f"fixed_plan is a plan for {plan['model']!r}, not {spec.name!r}")
    layers = conv_layers(spec, resolution)
    ups = []
    for w in plan.get("layers", []):
        i, axis = int(w["index"]), w.get("axis", "out")
        if not 0 <= i < len(layers):
            raise BadInput(f"fixed_plan names layer {i} but {spec.name} has layers 0..{len(layers) - 1}")
        total = layers[i].channels(axis)
        ch = sorted(int(c) for c in w["channels"])
        if any(not 0 <= c < total for c in ch) or not ch:
            raise BadInput(f"fixed_plan layer {i}: channels must be 1 to {total} distinct indices below {total}")
        ups.append(LayerUpdate(i, len(ch) / total, axis, ch))
    if not ups and not plan.get("bias_layers"):
        raise BadInput("fixed_plan trains nothing; give it layers or bias_layers (see `tinytrain eval "
                         "--ablate-static`)")
    scores = {int(k): float(v) for k, v in (plan.get("scores") or {}).items()}
    scores |= {int(w["index"]): float(w["score"]) for w in plan.get("layers", []) if "score" in w}
    return (UpdatePlan(spec.name, ups, [int(b) for b in plan.get("bias_layers", [])], batch_size, optimizer,
                       "sparse", resolution), scores)


@dataclass(frozen=True)
class TinyTrainOptions(MethodOptions):
    """TinyTrain's options, besides those every method takes (methods/options.py)."""

    method: ClassVar[str] = "tinytrain"

    score: Literal["full", "fisher", "fisher/memory", "fisher/compute"] = option(
        "full", "layer score: Fisher potential / (memory x compute) (Eq. 3), or the Table-3 ablations")
    channel_choice: Literal["fisher", "l2", "random", "redraw"] = option(
        "fisher", "channels by Fisher information (per task), weight L2 norm or at random (static; Fig. 6b), or "
                  "redraw: at random, drawn anew every iteration in the selected layers (TraDy-style, Quelennec "
                  "et al., ICLR 2026)")
    layer_choice: Literal["score", "l2"] = option("score", "layers by score, or by weight L2 norm (Table 3)")
    stop_rule: Literal["first", "skip"] = option(
        "skip", "skip: keep walking past a layer that fits at no ratio; first: stop there once one is placed")
    candidates: Literal["last6", "all"] = option(
        "all", "layers the Fisher pass inspects, of which it keeps those that fit the budgets: all (default since "
               "the ImageNet-regime validation: the same plans at 15 % compute, +1.8 points at SparseUpdate's "
               "budgets) or the last 6 blocks (+ feature-mix)")
    channel_ratios: tuple[float, ...] = option(
        (1.0, 0.5, 0.25, 0.125), "ratios tried per layer, largest that fits first", low=0.0, low_open=True, high=1.0)
    ratio_policy: Literal["fisher-mass", "largest"] = option(
        "fisher-mass", "fisher-mass: at most the smallest ratio whose channels hold fisher_mass of the layer's "
                       "Fisher information; largest: the largest ratio that fits")
    fisher_mass: float = option(0.5, "the share of a layer's Fisher information its K channels must hold",
                                low=0.0, low_open=True, high=1.0)
    axis: Literal["out", "in"] = option("out", "channel axis (in: channel_choice l2 or random)")
    bias: bool = option(False, "also train the BN shifts of the selected layers")
    crossed_biases: bool = option(
        True, "also train the BN shifts of every layer above the earliest selected one (the backward crosses "
              "them anyway: no stored activation, few MACs; counted in the budgets). On by default since it was "
              "validated with ImageNet weights: +4.0 +- 2.9 points "
              "(docs/results/2026-12-05-imagenet-regime.md)")
    fixed_plan: dict | None = option(
        None, "train this plan in every task, without a Fisher pass (the static ablation): an UpdatePlan JSON",
        check=_check_plan,
        expect='an UpdatePlan JSON object {"layers": [{"index": i, "channels": [...], "axis": "out"}], '
               '"bias_layers": [...]} or none')
    fisher_batch_size: int | Literal["auto"] = option(
        "auto", "micro-batch of the Fisher pass; auto = the largest within the memory budget", low=1)
    device: str | None = option(None, "a device profile name (tinytrain.costs.devices) giving both budgets")


# The defaults as a dict (the former name of TinyTrain's options)
OPTION_DEFAULTS = {k: v for k, v in TinyTrainOptions().to_dict().items() if k not in MethodOptions.keys()}


def candidate_layers(backbone, which: str) -> list[int]:
    """Conv layers inspected by the Fisher pass: the last 6 blocks (+ feature-mix) or all."""
    layers = backbone.conv_layers()
    if which == "all":
        return [l.index for l in layers]
    if which == "last6":
        n_blocks = len(backbone.spec.blocks)
        first = max(0, n_blocks - 6)
        return [l.index for l in layers if l.block >= first]
    raise BadInput(f"candidates must be 'last6' or 'all' (got {which!r})")


def budget_limits(spec, config, resolution: int, device: str | None = None) -> tuple[int, int]:
    """(memory bytes, backward MACs) from the config, a device profile (TinyTrain's `device` option), or the
    defaults."""
    mem, comp = config.memory_budget, config.compute_budget
    if device:
        from ..costs.devices import get_device
        prof = get_device(device)
        mem = mem if mem is not None else prof.memory_budget_bytes
        comp = comp if comp is not None else prof.compute_budget
    if mem is None:
        mem = DEFAULT_MEMORY_BUDGET
    if comp is None:
        comp = DEFAULT_COMPUTE_BUDGET
    if isinstance(mem, str):
        from ..costs.units import parse_bytes
        mem = parse_bytes(mem)
    if isinstance(comp, str):
        from ..costs.units import parse_compute_budget
        comp = parse_compute_budget(comp)
    if mem <= 0 or comp <= 0:
        raise BadInput("memory and compute budgets must be positive")
    return int(mem), int(compute_budget_macs(spec, comp, resolution))


class TinyTrainMethod(TrainedMethod):
    name = "tinytrain"
    default_batch_size = 1
    options_class = TinyTrainOptions

    def option(self, key: str):
        """One option's value (the same as `self.opts.<key>`)."""
        return getattr(self.opts, key)

    def applied_options(self) -> dict:
        """Every option but fixed_plan (its plan is the report's plan; extra["static_plan"] says it was given)."""
        return {k: v for k, v in self.opts.to_dict().items() if k != "fixed_plan"}

    def budgets(self, spec, res: int) -> tuple[int, int]:
        return budget_limits(spec, self.config, res, self.opts.device)

    @property
    def precision(self) -> str:
        """The config's precision, or the `device` option's profile's where the config leaves the default."""
        if self.opts.device and self.config.precision == "float32":
            from ..costs.devices import get_device, precision_of
            return precision_of(get_device(self.opts.device))
        return self.config.precision

    def _fisher(self, backbone, x: torch.Tensor, y: torch.Tensor, cands: list[int], mem_budget: int, res: int):
        """One Fisher pass, micro-batched so that what it keeps fits the memory budget."""
        fb = self.opts.fisher_batch_size
        layers = backbone.conv_layers(res)
        tap_plan = EnginePlan(biases=(min(cands),))
        per_image = predicted_saved_bytes(backbone.spec, tap_plan, 1, res) + 4 * sum(layers[i].output_elems
                                                                                   for i in cands)
        if fb == "auto":
            fb = max(1, mem_budget // max(per_image, 1))
        return fisher_information(backbone, x, y, cands, self.head, batch_size=int(fb),
                                  prefix_batch_size=self.opts.prefix_batch_size,
                                  support_cache=getattr(self, "support_cache", None))

    def select(self, backbone, channel_fisher: dict[int, torch.Tensor], res: int) -> tuple[list[LayerChoice], list[int], dict]:
        """Layers, channels and BN shifts to train, from per-channel Fisher information (one task's, or
        the average over validation tasks for the static ablation)."""
        spec = backbone.spec
        layers = backbone.conv_layers(res)
        mem_budget, comp_budget = self.budgets(spec, res)
        o = self.opts
        axis, choice, policy = o.axis, o.channel_choice, o.ratio_policy
        choice = "random" if choice == "redraw" else choice     # the first draw; `_redraw` draws the others
        if axis == "in" and choice == "fisher":
            raise BadInput("Fisher channel choice ranks output channels; use axis 'out' or channel_choice "
                             "'l2'/'random'")
        cands = sorted(channel_fisher)
        potential = {i: float(channel_fisher[i].sum()) for i in cands}
        scores = layer_scores(layers, potential, o.score)
        mods = backbone.conv_modules()
        if o.layer_choice == "score":
            order = sorted(cands, key=lambda i: (-scores[i], i))
        else:   # "l2"
            norms = {i: float(mods[i].conv.weight.detach().norm()) for i in cands}
            order = sorted(cands, key=lambda i: (-norms[i], i))
        gen = torch.Generator().manual_seed(int(self.config.seed))
        totals = {i: layers[i].channels(axis) for i in cands}
        cache: dict[tuple[int, float], tuple[int, ...]] = {}

        def channels_for(i: int, r: float) -> tuple[int, ...]:
            if (i, r) not in cache:
                cache[(i, r)] = select_channels(channel_count(r, totals[i]), choice, channel_fisher[i],
                                                mods[i].conv.weight, axis, gen)
            return cache[(i, r)]

        ratios = list(o.channel_ratios)
        cap = None
        if policy == "fisher-mass":
            mass = o.fisher_mass
            cap = lambda i: fisher_mass_ratio(channel_fisher[i], ratios, mass)
        biases_of, cost = self._costs(spec, res)
        chosen = select_layers(order, scores, channels_for, totals, cost, mem_budget, comp_budget, ratios,
                               o.stop_rule, axis, ratio_cap=cap)
        extra = {"memory_budget": mem_budget, "compute_budget_macs": comp_budget, "candidates": cands,
                 "fisher_potential": dict(potential),
                 "scores": {str(i): v for i, v in scores.items()}}
        return chosen, biases_of(chosen), extra

    def _costs(self, spec, res: int):
        """(biases_of, cost): the BN shifts a selection trains, and a selection's (memory bytes, backward MACs)
        as the budgets count them."""
        o = self.opts
        cm = CostModel(spec, res, self.precision)
        n_layers = len(conv_layers(spec, res))

        def biases_of(sel: list[LayerChoice]) -> list[int]:
            if not sel:
                return []
            if o.crossed_biases:
                return list(range(min(c.index for c in sel), n_layers))
            return sorted(c.index for c in sel) if o.bias else []

        def cost(sel: list[LayerChoice]) -> tuple[int, int]:
            ups = [LayerUpdate(c.index, len(c.channels) / c.channels_total, c.axis, list(c.channels)) for c in sel]
            biases = biases_of(sel)
            return cm.sparse_memory_bytes(ups, self.config.optimizer, biases), cm.sparse_backward_macs(ups, biases)
        return biases_of, cost

    def reachable(self, spec, cands: list[int], res: int) -> list[int]:
        """The candidates that fit both budgets alone at the smallest channel ratio. With the `skip` stop rule
        no plan can hold any other (a layer only adds memory and MACs to a selection), so the Fisher pass need
        not inspect them, nor back-propagate below the deepest one kept: the same plan, a shorter pass. All
        of `cands` when none fits (the selection then says which budgets would), with the `first` rule (there an
        unfitting layer ends the walk, so it changes the plan) and with random channels (the walk over an
        unfitting layer draws from the seeded generator, so leaving it out would change the later draws)."""
        if self.opts.stop_rule != "skip" or self.opts.channel_choice in ("random", "redraw"):
            return list(cands)
        mem_budget, comp_budget = self.budgets(spec, res)
        _, cost = self._costs(spec, res)
        r = min(self.opts.channel_ratios)
        layers = conv_layers(spec, res)
        keep = []
        for i in cands:
            total = layers[i].channels(self.opts.axis)
            mem, macs = cost([LayerChoice(i, tuple(range(channel_count(r, total))), total, self.opts.axis, 0.0, r)])
            if mem <= mem_budget and macs <= comp_budget:
                keep.append(i)
        return keep or list(cands)

    def _fixed(self, backbone, res: int) -> tuple[list[LayerChoice], list[int], dict]:
        spec = backbone.spec
        plan, scores = fixed_update_plan(self.opts.fixed_plan, spec, res, self.batch_size, self.config.optimizer)
        layers = backbone.conv_layers(res)
        mem_budget, comp_budget = self.budgets(spec, res)
        chosen = []
        for u in plan.layers:
            total = layers[u.index].channels(u.axis)
            chosen.append(LayerChoice(u.index, tuple(u.channels), total, u.axis, scores.get(u.index, 0.0),
                                      len(u.channels) / total))
        return chosen, list(plan.bias_layers), {"memory_budget": mem_budget, "compute_budget_macs": comp_budget}

    def _build(self, x: torch.Tensor, y: torch.Tensor) -> Built:
        t0 = time.perf_counter()
        backbone = private_copy(self.source_backbone)
        spec = backbone.spec
        res = int(x.shape[-1])
        if self.opts.fixed_plan:
            chosen, biases, extra = self._fixed(backbone, res)
            extra["fisher_seconds"] = 0.0
        else:
            mem_budget, _ = self.budgets(spec, res)
            cands = self.reachable(spec, candidate_layers(backbone, self.opts.candidates), res)
            fisher = self._fisher(backbone, x, y, cands, mem_budget, res)
            chosen, biases, extra = self.select(backbone, fisher.channel, res)
            extra |= {"fisher_batch_size": fisher.batch_size, "fisher_seconds": fisher.seconds}
        up = sparse_plan(spec, [LayerUpdate(c.index, len(c.channels) / c.channels_total, c.axis, list(c.channels))
                                for c in chosen], biases, self.batch_size, self.config.optimizer, res)
        engine = SparseEngine(backbone, up)
        after_step = self._redraw(engine, chosen) if self.opts.channel_choice == "redraw" else None
        extra["static_plan"] = bool(self.opts.fixed_plan)
        budgets = (extra.pop("memory_budget"), extra.pop("compute_budget_macs"))
        potential = extra.pop("fisher_potential", None)
        return Built(engine, backbone, up, {c.index: c.score for c in chosen}, time.perf_counter() - t0, extra,
                     after_step=after_step, budgets=budgets,
                     fisher_potential=None if potential is None else {int(k): v for k, v in potential.items()})

    def _redraw(self, engine: SparseEngine, chosen: list[LayerChoice]):
        """After each iteration: K new random channels in every selected layer (same layers, same K, so the
        same costs), their optimizer state started afresh."""
        gen = torch.Generator().manual_seed(int(self.config.seed) + 1)

        partial = [c for c in chosen if len(c.channels) < c.channels_total]

        def after_step(optimizer) -> None:
            engine.reselect({c.index: tuple(torch.randperm(c.channels_total, generator=gen)[:len(c.channels)].tolist())
                             for c in partial})
            for c in partial:
                optimizer.state.pop(engine.weight_params[str(c.index)], None)
        return after_step


def static_plan(backbone, head, tasks, config) -> dict:
    """One plan for every task (the ablation that isolates task adaptivity): the Fisher information of
    each validation task, normalised to sum 1 per task so that every task weighs the same, averaged, then
    the same selection as the adaptive method. Returns a `fixed_plan` option value: the `UpdatePlan` JSON
    with the scores it was chosen by and the number of tasks."""
    tasks = list(tasks)
    if not tasks:
        raise BadInput("the static plan needs at least one validation task")
    method = TinyTrainMethod(backbone, config, head)
    total: dict[int, torch.Tensor] = {}
    for task in tasks:
        x, y = task.support_x.float(), task.support_y.long()
        res = int(x.shape[-1])
        bb = private_copy(backbone)
        cands = candidate_layers(bb, method.opts.candidates)
        mem_budget, _ = method.budgets(bb.spec, res)
        fisher = method._fisher(bb, x, y, cands, mem_budget, res).channel
        norm = sum(float(v.sum()) for v in fisher.values()) or 1.0
        for i, v in fisher.items():
            total[i] = total.get(i, torch.zeros_like(v)) + v / norm
    avg = {i: v / len(tasks) for i, v in total.items()}
    chosen, biases, _ = method.select(private_copy(backbone), avg, res)
    plan = UpdatePlan(backbone.spec.name, [LayerUpdate(c.index, len(c.channels) / c.channels_total, c.axis,
                                                       list(c.channels)) for c in chosen],
                      biases, method.batch_size, config.optimizer, "sparse", res)
    return plan.to_dict() | {"scores": {str(c.index): c.score for c in chosen}, "tasks": len(tasks)}
