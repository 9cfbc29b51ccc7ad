"""`tinytrain plan`: what an adaptation would update and cost, and whether it fits, before training.

TinyTrain's plan needs the user's support set (one Fisher pass, then the budgeted selection);
the baselines' plans are fixed by the method (FullTrain: everything at batch 100, ...) and are
priced by the same analytic cost model, so the two can be compared side by side.
"""
from __future__ import annotations

import time

import torch

from ..costs.baselines import fulltrain_plan, lastlayer_plan, sparseupdate_plan, tinytl_plan
from ..costs.devices import DeviceProfile, check_fit
from ..costs.model import CostModel
from ..costs.plan import UpdatePlan
from ..costs.units import format_bytes
from ..methods.base import AdaptConfig, plan_rows
from ..models.backbone import Backbone
from ..models.specs import ArchSpec, conv_layers
from ..methods import make_method
from .session import Budgets, device_precision, resolution_advice_on_failure
from ..errors import BadInput

FIXED_PLANS = {"fulltrain": fulltrain_plan, "lastlayer": lastlayer_plan, "tinytl": tinytl_plan,
               "sparseupdate": sparseupdate_plan}
PLANNED_METHODS = ("tinytrain",) + tuple(FIXED_PLANS)


def fixed_plan(method: str, spec: ArchSpec, resolution: int, optimizer: str = "adam") -> UpdatePlan:
    """A baseline's update plan at the paper's batch size (FullTrain/TinyTL 100, others 1)."""
    if method not in FIXED_PLANS:
        raise BadInput(f"no fixed plan for {method!r}; choose one of {', '.join(PLANNED_METHODS)}")
    if method == "sparseupdate":
        return sparseupdate_plan(spec, None, resolution, optimizer)
    return FIXED_PLANS[method](spec, resolution, optimizer)


def tinytrain_plan(backbone: Backbone, support_x: torch.Tensor, support_y: torch.Tensor, config: AdaptConfig
                   ) -> tuple[UpdatePlan, list[dict], float, int]:
    """TinyTrain's dry run on the support set: (update plan, scored rows, selection seconds, the earliest layer
    its Fisher pass inspected)."""
    method = make_method("tinytrain", backbone, config)
    t0 = time.perf_counter()
    report = method.plan(support_x, support_y)
    seconds = report.selection_seconds or (time.perf_counter() - t0)
    if report.update_plan is None:
        raise BadInput("the tinytrain method returned no update plan; it cannot be priced")
    inspected = report.extra.get("candidates") or [0]
    return report.update_plan, [r.to_dict() for r in report.rows], float(seconds), int(min(inspected))


def price_plan(spec: ArchSpec, plan: UpdatePlan, budgets: Budgets) -> dict:
    """Memory per component, backward MACs, and whether the plan fits the device or the budgets."""
    model = CostModel(spec, plan.resolution, device_precision(budgets))
    mem = model.backward_memory(plan)
    macs = model.backward_macs(plan)
    out = {"memory": mem.to_dict(), "predicted_memory_bytes": mem.total, "backward_macs": macs,
           "fulltrain_backward_macs": 2 * model.forward_macs}
    out["compute_share"] = macs / (2 * model.forward_macs)
    if isinstance(budgets.device, DeviceProfile):
        fit = check_fit(spec, plan, budgets.device)
        out |= {"device_fit": fit.to_dict()} | {k: getattr(fit, k) for k in ("fits", "fits_memory", "fits_compute",
                                                                        "fits_flash")}
        out["memory_needed_bytes"] = fit.memory_needed_bytes
        # explicit --memory-budget / --compute-budget tighten the device's own budgets
        if budgets.memory_bytes is not None and budgets.memory_bytes < fit.memory_budget_bytes:
            out["fits_memory"] = fit.memory_needed_bytes <= budgets.memory_bytes
        limit = budgets.compute_macs(spec, plan.resolution)
        if limit is not None:
            out["fits_compute"] = macs <= limit
        out["fits"] = bool(out["fits_memory"] and out["fits_compute"] and out["fits_flash"])
    else:
        limit = budgets.compute_macs(spec, plan.resolution)
        out["fits_memory"] = budgets.memory_bytes is None or mem.total <= budgets.memory_bytes
        out["fits_compute"] = limit is None or macs <= limit
        out["fits"] = bool(out["fits_memory"] and out["fits_compute"])
        out["memory_needed_bytes"] = mem.total
    return out


def cache_and_estimate(spec: ArchSpec, plan: UpdatePlan, budgets: Budgets, priced: dict, n_images: int | None,
                       fisher_from: int | None = None, iterations: int = 40) -> dict:
    """What the fine-tuning loop would cache (the support set's frozen-prefix output) and whether it fits,
    and, on a device profile with a throughput, the estimated end-to-end time and energy.

    On a device the cache counts in the memory the plan needs there and is kept only if that still fits
    the device's budget; without a device it is held beside the backward memory, within the methods'
    default cache budget. `priced` is `price_plan`'s answer (its memory_needed_bytes is updated).
    `fisher_from`: the earliest layer TinyTrain's dry run inspected (its Fisher pass is priced from there), None
    for a method without a Fisher pass."""
    from ..costs.devices import adaptation_macs, estimate_adaptation
    from ..methods.trained import DEFAULT_CACHE_BUDGET
    from ..sparse.accounting import stage_input_elems, stage_name

    n = n_images or 25
    out: dict = {"images": n, "images_assumed": n_images is None, "iterations": iterations}
    layers = conv_layers(spec, plan.resolution)
    trained = [u.index for u in plan.layers] + list(plan.bias_layers)
    first = min(trained) if trained else 0
    block = layers[first].block if plan.kind == "sparse" else -1
    device = budgets.device if isinstance(budgets.device, DeviceProfile) else None
    cache = {"cached": False, "bytes": 0, "where": stage_name(spec, block)}
    if block <= -1:
        cache["note"] = "nothing frozen below the trained layers: no prefix to cache"
    else:
        need = n * 4 * stage_input_elems(spec, block, plan.resolution)
        cache["bytes"] = need
        if device is not None:
            limit = min(device.memory_budget_bytes, budgets.memory_bytes or device.memory_budget_bytes)
            left = limit - priced["memory_needed_bytes"]
            cache["cached"] = need <= left
            if cache["cached"]:
                priced["memory_needed_bytes"] += need
                cache["note"] = "counted in the memory needed on the device"
            else:
                cache["note"] = (f"the device's budget leaves {format_bytes(max(0, left))}, so the prefix is "
                                 f"recomputed every iteration")
        else:
            cache["cached"] = need <= DEFAULT_CACHE_BUDGET
            cache["note"] = (f"held beside the backward memory, within the default cache budget of "
                             f"{format_bytes(DEFAULT_CACHE_BUDGET)}" if cache["cached"] else
                             f"over the default cache budget of {format_bytes(DEFAULT_CACHE_BUDGET)}")
    out["prefix_cache"] = cache
    if device is not None:
        back = CostModel(spec, plan.resolution).backward_macs(plan)
        parts = adaptation_macs(spec, plan.resolution, back, n, iterations, fisher_from, first, cache["cached"])
        est = estimate_adaptation(device, sum(parts.values()), priced["memory_needed_bytes"])
        out["estimate"] = est.to_dict() | {"macs_by_phase": parts}
        if cache["cached"] and est.available:
            plain = adaptation_macs(spec, plan.resolution, back, n, iterations, fisher_from)
            out["estimate"]["seconds_without_cache"] = sum(plain.values()) / device.train_macs_per_second
    return out


def make_plan(spec: ArchSpec, method: str, budgets: Budgets, resolution: int,
              backbone: Backbone | None = None, support_x: torch.Tensor | None = None,
              support_y: torch.Tensor | None = None, seed: int = 0) -> dict:
    """The whole `tinytrain plan` answer for one method, as a JSON-ready dict. TinyTrain needs the
    backbone and the support set; the baselines' plans need only the architecture."""
    model = spec.name
    result = {"model": model, "method": method, "resolution": resolution} | budgets.to_dict()
    if method == "tinytrain":
        if support_x is None or backbone is None:
            raise BadInput("TinyTrain's plan depends on the task: give --support DIR")
        config = AdaptConfig(seed=seed, resolution=resolution, memory_budget=budgets.memory_bytes,
                             compute_budget=budgets.compute, precision=device_precision(budgets))
        torch.manual_seed(seed)
        with resolution_advice_on_failure(spec, budgets, config):
            plan, rows, seconds, fisher_from = tinytrain_plan(backbone, support_x, support_y, config)
        result |= {"selection_seconds": seconds, "fisher_first_layer": fisher_from}
    else:
        plan = fixed_plan(method, spec, resolution)
        rows = [r.to_dict() for r in plan_rows(spec, plan)]
    result |= {"batch_size": plan.batch_size, "plan": rows, "update_plan": plan.to_dict()}
    result |= price_plan(spec, plan, budgets)
    result |= cache_and_estimate(spec, plan, budgets, result, None if support_x is None else len(support_x),
                                 result.get("fisher_first_layer"))
    return result
