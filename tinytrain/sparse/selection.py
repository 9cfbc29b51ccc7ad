"""TinyTrain's selection: multi-objective layer score (Eq. 3), greedy layer selection under memory
and compute budgets, and top-K channel selection inside each selected layer.

    s_i = P_i / ( (|W_i| / max_l |W_l|) * (M_i / max_l M_l) )

|W_i| is the layer's parameter count and M_i its forward MACs, normalised by the maxima over all
conv layers of the model (paper: "across all layers L of the model").
"""
from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import Callable, Sequence

import torch

from ..costs.plan import channel_count
from ..models.specs import ConvLayer
from ..errors import BadInput

SCORES = ("full", "fisher", "fisher/memory", "fisher/compute")
CHANNEL_CHOICES = ("fisher", "l2", "random")
STOP_RULES = ("first", "skip")
RATIO_POLICIES = ("largest", "fisher-mass")


def layer_scores(layers: Sequence[ConvLayer], potential: dict[int, float], score: str = "full") -> dict[int, float]:
    """Score of every layer in `potential` (Table 3 ablations: fisher, fisher/memory, fisher/compute)."""
    if score not in SCORES:
        raise BadInput(f"score must be one of {', '.join(SCORES)} (got {score!r})")
    max_w = max(l.params for l in layers)
    max_m = max(l.macs for l in layers)
    out = {}
    for i, p in potential.items():
        w, m = layers[i].params / max_w, layers[i].macs / max_m
        denom = {"full": w * m, "fisher": 1.0, "fisher/memory": w, "fisher/compute": m}[score]
        out[i] = float(p) / denom
    return out


def select_channels(k: int, choice: str = "fisher", fisher: torch.Tensor | None = None,
                    weight: torch.Tensor | None = None, axis: str = "out",
                    generator: torch.Generator | None = None) -> tuple[int, ...]:
    """Indices of the K channels to update, sorted.

    fisher: the K largest Delta (dynamic, per task; needs output channels);
    l2: the K largest weight L2 norms along `axis` (static); random: K uniformly at random (static).
    """
    if choice not in CHANNEL_CHOICES:
        raise BadInput(f"channel choice must be one of {', '.join(CHANNEL_CHOICES)} (got {choice!r})")
    if choice == "fisher":
        if fisher is None:
            raise BadInput("Fisher channel choice needs the Fisher information of the layer")
        values = fisher
    elif choice == "l2":
        if weight is None:
            raise BadInput("L2 channel choice needs the layer weight")
        dims = (1, 2, 3) if axis == "out" or weight.shape[1] == 1 else (0, 2, 3)
        values = weight.detach().pow(2).sum(dims)
    else:
        size = len(fisher) if fisher is not None else (weight.shape[0] if axis == "out" or weight.shape[1] == 1
                                                         else weight.shape[1])
        values = torch.rand(size, generator=generator)
    k = max(1, min(int(k), len(values)))
    # stable tie-break by index: sort by (-value, index)
    order = sorted(range(len(values)), key=lambda c: (-float(values[c]), c))
    return tuple(sorted(order[:k]))


@dataclass(frozen=True)
class LayerChoice:
    """One selected layer: its channels along `axis`, the ratio tried, and its score."""

    index: int
    channels: tuple[int, ...]
    channels_total: int
    axis: str
    score: float
    ratio: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def fisher_mass_ratio(fisher: torch.Tensor, ratios: Sequence[float], mass: float) -> float:
    """The smallest ratio of the ladder whose top-K channels (by Fisher information) hold at least `mass`
    of the layer's total Fisher information. A task whose Fisher information sits in a few channels of a
    layer gets a small K there, which leaves budget for more layers (the paper's goal: as many top-scored
    layers as the budgets allow); a layer whose information is spread out is trained more widely."""
    if not 0 < mass <= 1:
        raise BadInput(f"fisher mass must be in (0, 1], got {mass}")
    values = fisher.detach().double().flatten().sort(descending=True).values
    total = float(values.sum())
    ladder = sorted(set(float(r) for r in ratios))
    if total <= 0:
        return ladder[0]
    cum = values.cumsum(0) / total
    for r in ladder:
        k = channel_count(r, len(values))
        if float(cum[k - 1]) >= mass - 1e-12:
            return r
    return ladder[-1]


# fits(selection) -> (memory_bytes, backward_macs); the budgets are checked by the caller below
CostFn = Callable[[list[LayerChoice]], tuple[int, int]]


class BudgetTooSmall(BadInput):
    """No candidate layer fits the budgets; the message names the smallest budget that would."""


def select_layers(order: Sequence[int], scores: dict[int, float], channels_for: Callable[[int, float], tuple[int, ...]],
                  channels_total: dict[int, int], cost: CostFn, memory_budget: int, compute_budget: int,
                  ratios: Sequence[float] = (1.0, 0.5, 0.25, 0.125), stop_rule: str = "first",
                  axis: str = "out", ratio_cap: Callable[[int], float] | None = None) -> list[LayerChoice]:
    """Greedy selection: walk `order` (best first); for each layer take the largest ratio (at most
    `ratio_cap(i)`, e.g. `fisher_mass_ratio`) whose whole selection still fits both budgets. With stop_rule
    "first" the walk stops at the first layer that fits at no ratio once a layer has been placed (the
    paper's prefix constraint; layers that cannot fit even alone are passed over until then, so a plan is
    never empty while any layer fits); with "skip" it always goes on to the next layer."""
    if stop_rule not in STOP_RULES:
        raise BadInput(f"stop_rule must be one of {', '.join(STOP_RULES)} (got {stop_rule!r})")
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise BadInput(f"channel ratios must be in (0, 1], got {list(ratios)}")
    ratios = sorted(set(float(r) for r in ratios), reverse=True)
    chosen: list[LayerChoice] = []
    for i in order:
        placed = False
        cap = ratio_cap(i) if ratio_cap is not None else 1.0
        for r in [r for r in ratios if r <= cap + 1e-12] or ratios[-1:]:
            cand = LayerChoice(i, channels_for(i, r), channels_total[i], axis, scores.get(i, 0.0), r)
            mem, macs = cost(chosen + [cand])
            if mem <= memory_budget and macs <= compute_budget:
                chosen.append(cand)
                placed = True
                break
        if not placed and stop_rule == "first" and chosen:
            break
    if not chosen:
        need = [cost([LayerChoice(i, channels_for(i, ratios[-1]), channels_total[i], axis, 0.0, ratios[-1])])
                for i in order]
        min_mem = min(m for m, _ in need)
        min_macs = min(c for _, c in need)
        first_mem, first_macs = need[0] if need else (0, 0)
        raise BudgetTooSmall(
            f"no candidate layer fits the budgets (memory {memory_budget} B, compute {compute_budget} MACs); "
            f"the cheapest single layer at ratio {ratios[-1]:g} needs {min_mem} B of memory and the least "
            f"compute is {min_macs} MACs (the top-scored layer needs {first_mem} B / {first_macs} MACs): "
            f"raise the budgets to at least these")
    return sorted(chosen, key=lambda c: c.index)
