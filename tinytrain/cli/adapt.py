"""`tinytrain adapt` (personalise a model on a support folder) and `tinytrain predict` (use it)."""
from __future__ import annotations

import json

from . import UserError


def add_model_arguments(p, default_model: str = "mcunet-5fps") -> None:
    p.add_argument("--model", default=default_model, help=f"backbone from the zoo (default {default_model})")
    p.add_argument("--checkpoint", default="pocket",
                   help="'pocket' or 'pocket-long' (shipped), 'random', 'imagenet' (mobilenetv2-1.0) "
                   "or a checkpoint path")
    p.add_argument("--resolution", type=int, default=128, help="input resolution in pixels (default 128)")


def add_budget_arguments(p) -> None:
    p.add_argument("--device", help="device profile whose budgets to use (see `tinytrain plan --list-devices`)")
    p.add_argument("--memory-budget", help="backward-pass memory budget, e.g. 1MB, 512KB (overrides --device)")
    p.add_argument("--compute-budget",
                   help="backward MACs budget: a share of FullTrain's (15%%) or a MAC count (6.5M)")


def add_policy_argument(p) -> None:
    p.add_argument("--sparseupdate-policy", metavar="JSON",
                   help="static policy for --method sparseupdate, e.g. one written by `tinytrain sparseupdate-policy` "
                        "(default: the published policy, else a derived one shipped in the zoo)")


def register(sub) -> None:
    p = sub.add_parser("adapt", help="adapt a model to a few labelled images (one folder per class)")
    add_model_arguments(p)
    p.add_argument("--support", required=True, metavar="DIR", help="support images, DIR/<class>/<image>")
    p.add_argument("--query", metavar="DIR", help="optional labelled query images to report accuracy on")
    p.add_argument("--method", default="tinytrain", help="none|lastlayer|fulltrain|tinytl|sparseupdate|tinytrain")
    add_budget_arguments(p)
    p.add_argument("--iterations", type=int, default=40, help="fine-tuning iterations (default 40, as the paper)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    add_policy_argument(p)
    p.add_argument("--save", metavar="OUT", help="write the adapted model and prototypes to this directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run_adapt)

    q = sub.add_parser("predict", help="classify images with a model saved by `tinytrain adapt --save`")
    q.add_argument("--model-dir", required=True, metavar="OUT", help="directory written by `adapt --save`")
    q.add_argument("images", nargs="+", help="image files or folders")
    q.add_argument("--top", type=int, default=1, help="also list the top-k classes (default 1)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=run_predict)


def run_adapt(args) -> int:
    from ..deploy.adapted import save_adapted
    from ..deploy.session import adapt_to_support, load_task_folders, resolve_budgets
    from ..methods.base import AdaptConfig
    from ..models.weights import load_backbone

    if args.iterations < 0:
        raise UserError(f"--iterations must be >= 0 (got {args.iterations})")
    budgets = resolve_budgets(args.memory_budget, args.compute_budget, args.device)
    import torch
    torch.manual_seed(args.seed)   # a 'random' checkpoint is then reproducible
    backbone, meta = load_backbone(args.model, args.checkpoint)
    support, query = load_task_folders(args.support, args.query, args.resolution)
    options = {}
    if args.sparseupdate_policy:
        if args.method != "sparseupdate":
            raise UserError("--sparseupdate-policy is for --method sparseupdate")
        options["policy"] = args.sparseupdate_policy
    config = AdaptConfig(iterations=args.iterations, lr=args.lr, seed=args.seed, resolution=args.resolution,
                         options=options)
    adapted, summary = adapt_to_support(backbone, args.model, support, query, args.method, config, budgets,
                                        info={"checkpoint": meta.get("checkpoint", args.checkpoint)})
    if args.save:
        summary["saved_to"] = str(save_adapted(args.save, adapted))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def format_summary(s: dict) -> str:
    from ..costs.units import format_bytes, format_macs

    lines = [f"{s['method']} on {s['model']} at {s['resolution']} px: {s['support_images']} support images, "
             f"{len(s['classes'])} classes" + (" (mixed sizes, resized)" if s.get("mixed_image_sizes") else "")]
    if s.get("plan"):
        lines.append(f"{'layer':>5}  {'name':<16} {'channels':>12}  {'score':>10}")
        for r in s["plan"]:
            score = r.get("score")
            lines.append(f"{r['layer']:>5}  {r['name']:<16} {r['channels_updated']:>5} / {r['channels_total']:<5} "
                         f"{score if score is None else f'{score:10.4g}':>10}")
    else:
        lines.append("plan: no backbone weights are updated")
    mem = s.get("predicted_memory_bytes")
    lines.append(f"predicted backward memory: {format_bytes(mem) if mem else 0}"
                 + (f" (budget {format_bytes(s['memory_budget_bytes'])})" if s.get("memory_budget_bytes") else ""))
    if s.get("measured_saved_bytes") is not None:
        lines.append(f"measured saved-for-backward: {format_bytes(s['measured_saved_bytes'])}")
    lines.append(f"backward MACs: {format_macs(s.get('backward_macs') or 0)}")
    lines.append(f"time: selection {s.get('selection_seconds') or 0:.2f} s, training {s.get('train_seconds') or 0:.2f} s")
    if "query_accuracy" in s:
        lines.append(f"query accuracy: {100 * s['query_accuracy']:.1f} % on {s['query_images']} images")
    if s.get("saved_to"):
        lines.append(f"saved to {s['saved_to']} (use `tinytrain predict --model-dir {s['saved_to']} IMAGES...`)")
    return "\n".join(lines)


def run_predict(args) -> int:
    from ..deploy.adapted import classify, load_adapted
    from ..deploy.images import collect_image_paths, load_images

    if args.top < 1:
        raise UserError(f"--top must be >= 1 (got {args.top})")
    adapted = load_adapted(args.model_dir)
    paths = collect_image_paths(args.images)
    x, _ = load_images(paths, adapted.resolution)
    results = classify(adapted, x, args.top)
    for p, r in zip(paths, results):
        r["image"] = str(p)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            extra = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in r["top"]) if args.top > 1 else ""
            print(f"{r['image']}\t{r['label']}" + (f"\t({extra})" if extra else ""))
    return 0
