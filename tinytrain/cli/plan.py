"""`tinytrain plan`: the update plan and its predicted cost, and whether it fits, without training."""
from __future__ import annotations

import json

from ..errors import BadInput
from .adapt import SEED, add_budget_arguments, add_model_arguments, load_model_for_task, one_line_errors


def register(sub) -> None:
    p = one_line_errors(sub.add_parser("plan", help="show what an adaptation would update and cost, and whether it "
                                                    "fits a device"))
    add_model_arguments(p)
    p.add_argument("--support", metavar="DIR", help="support images, DIR/<class>/<image> (needed for tinytrain)")
    p.add_argument("--method", default="tinytrain",
                   help="tinytrain (default; Fisher pass + selection on --support) or a baseline: "
                        "fulltrain|lastlayer|tinytl|sparseupdate")
    add_budget_arguments(p)
    p.add_argument("--devices-file", metavar="JSON", help="extra device profiles (same shape as the built-in table)")
    p.add_argument("--list-devices", action="store_true", help="list the device profiles and exit")
    p.add_argument("--paper-check", action="store_true",
                   help="with --device: its end-to-end time/energy estimate against the paper's own figures, and exit")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run_plan)


def run_plan(args) -> int:
    from ..costs.devices import list_devices
    from ..deploy.planning import PLANNED_METHODS, make_plan
    from ..deploy.session import resolve_budgets
    from ..models.specs import get_spec

    if args.list_devices:
        devices = list_devices(args.devices_file)
        if args.json:
            print(json.dumps([d.to_dict() for d in devices], indent=2))
        else:
            for d in devices:
                print(f"{d.name:<14} {d.description}")
        return 0
    if args.paper_check:
        from ..costs.devices import format_paper_check, get_device, paper_check
        if not args.device:
            raise BadInput("--paper-check needs --device NAME (e.g. pi-zero-2)")
        device = get_device(args.device, args.devices_file)
        if not paper_check(device):
            raise BadInput(f"the paper reports end-to-end times only for pi-zero-2 (Table 9, Fig. 5) and jetson-nano "
                            f"(Table 10), not for {args.device}")
        print(json.dumps(paper_check(device), indent=2) if args.json else format_paper_check(device))
        return 0
    if args.method not in PLANNED_METHODS:
        raise BadInput(f"--method {args.method!r} has no plan; choose one of {', '.join(PLANNED_METHODS)}")
    budgets = resolve_budgets(args.memory_budget, args.compute_budget, args.device, args.devices_file)
    if args.method == "tinytrain" and budgets.memory_bytes is None:
        raise BadInput("TinyTrain needs a memory budget: give --device NAME or --memory-budget (e.g. 1MB)")
    spec = get_spec(args.model)
    backbone = support = None
    if args.method == "tinytrain":
        if not args.support:
            raise BadInput("TinyTrain's plan depends on the task: give --support DIR (one folder per class)")
        backbone, resolution, source, _, support, _ = load_model_for_task(args, args.support)
    else:
        from ..deploy.session import resolve_resolution
        from ..models.weights import load_backbone
        trained = load_backbone(args.model, args.checkpoint).checkpoint_info.resolution
        resolution, source = resolve_resolution(trained, args.resolution)
    result = make_plan(spec, args.method, budgets, resolution, backbone,
                       support.x if support else None, support.y if support else None, args.seed)
    result["resolution_from"] = source
    print(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0


def format_plan(r: dict) -> str:
    from ..costs.units import format_bytes, format_macs

    lines = [f"{r['method']} on {r['model']} at {r['resolution']} px"
             + (f" ({r['resolution_from']})" if r.get("resolution_from") else "") + f", batch {r['batch_size']}"
             + (f", device {r['device']}" if r.get("device") else "")]
    rows = r.get("plan") or []
    if rows:
        lines.append(f"{'layer':>5}  {'name':<16} {'channels':>12}  {'score':>10}")
        shown = rows if len(rows) <= 20 else rows[:8] + [None] + rows[-8:]
        for row in shown:
            if row is None:
                lines.append(f"{'...':>5}  ({len(rows) - 16} more layers)")
                continue
            score = row.get("score")
            lines.append(f"{row['layer']:>5}  {row['name']:<16} {row['channels_updated']:>5} / "
                         f"{row['channels_total']:<5} {'-' if score is None else f'{score:.4g}':>10}")
    m = r["memory"]
    lines.append("predicted backward memory: " + ", ".join(
        f"{k.replace('_', ' ')} {format_bytes(m[k])}" for k in ("updated_weights", "optimizer_state",
                                                               "activations", "biases")) +
                 f"; total {format_bytes(m['total'])}")
    if r.get("memory_needed_bytes") != m["total"]:
        lines.append(f"memory needed on the device (all weights in RAM): {format_bytes(r['memory_needed_bytes'])}")
    lines.append(f"backward MACs: {format_macs(r['backward_macs'])} ({100 * r['compute_share']:.1f} % of FullTrain)")
    if r.get("selection_seconds") is not None:
        lines.append(f"Fisher pass + selection: {r['selection_seconds']:.2f} s")
    lines += format_cache_and_estimate(r)
    verdict = "fits" if r["fits"] else "does NOT fit"
    why = [w for w, ok in (("memory", r.get("fits_memory")), ("compute", r.get("fits_compute")),
                           ("flash", r.get("fits_flash"))) if ok is False]
    budget = f"memory budget {format_bytes(r['memory_budget_bytes'])}" if r.get("memory_budget_bytes") else ""
    lines.append(f"{verdict}" + (f" ({budget})" if budget else "") + (f": over on {', '.join(why)}" if why else ""))
    return "\n".join(lines)


def format_cache_and_estimate(r: dict) -> list[str]:
    """The support-set prefix cache line and, on a device, the end-to-end estimate lines."""
    from ..costs.units import format_bytes

    lines = []
    c = r.get("prefix_cache")
    if c and c.get("bytes"):
        state = "cached" if c["cached"] else "NOT cached"
        lines.append(f"support prefix cache: {format_bytes(c['bytes'])} ({r['images']} images at {c['where']}), "
                     f"{state}; {c['note']}")
    e = r.get("estimate")
    if e:
        images = f"{r['images']} images" + (" (assumed, as the paper's Table 9; give --support)" if r["images_assumed"]
                                            else "")
        if e["available"]:
            energy = f", {e['joules'] / 1000:.2f} kJ" if e["joules"] is not None else ""
            lines.append(f"estimated end-to-end on {e['device']} (an estimate, not a measurement): "
                         f"{e['minutes']:.1f} min{energy} for {r['iterations']} iterations on {images}")
            lines.append(f"  basis: {e['basis']}")
        else:
            lines.append(f"end-to-end estimate unavailable: {e['basis']}")
        if e.get("caveat"):
            lines.append(f"  caveat: {e['caveat']}")
    return lines
