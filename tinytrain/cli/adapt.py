"""`tinytrain adapt` (personalise a model on a support folder) and `tinytrain predict` (use it)."""
from __future__ import annotations

import argparse
import json
import math

from ..errors import BadInput
from . import one_line_errors  # noqa: F401  (one_line_errors: imported from here by the commands)

# Bounds of the numeric flags, checked when the command line is read (before any import of torch, any model
# or image is loaded): the same as the library's (deploy.session.MAX_ITERATIONS, adapted.MAX_RESOLUTION,
# bench.harness.MAX_LR), written here so that reading them costs nothing.
MAX_ITERATIONS = 100_000
MIN_RESOLUTION, MAX_RESOLUTION = 8, 4096
MAX_LR = 100.0
MAX_SEED = 2 ** 63 - 1


def whole_number(flag: str, low: int, high: int | None = None, hint: str = "", span: str | None = None):
    """An argparse type: a whole number in [low, high], else one line naming the flag, the range (or `span`,
    the words for it) and `hint`."""
    def parse(text: str) -> int:
        t = str(text).strip()
        try:
            value = int(t)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            words = span or (f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}")
            raise argparse.ArgumentTypeError(f"must be a whole number {words} (got {text!r})"
                                             + (f"; {hint}" if hint else ""))
        return value
    parse.__name__ = flag
    return parse


def learning_rate(flag: str = "--lr", default: str = "1e-3", note: str = ""):
    """An argparse type: a finite rate in (0, MAX_LR] (larger ones only diverge), else one line."""
    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= MAX_LR):
            raise argparse.ArgumentTypeError(
                f"must be a positive number up to {MAX_LR:g} (got {text!r}); the default is {default}, and rates "
                f"above {MAX_LR:g} only diverge{note}")
        return value
    parse.__name__ = flag
    return parse


ITERATIONS = whole_number("--iterations", 0, MAX_ITERATIONS, "the paper uses 40")
RESOLUTION = whole_number("--resolution", MIN_RESOLUTION, MAX_RESOLUTION, "e.g. 128, the paper's")
SEED = whole_number("--seed", 0, MAX_SEED, "e.g. 0", span="from 0 to 2**63 - 1")


def add_model_arguments(p, default_model: str = "mcunet-5fps") -> None:
    p.add_argument("--model", default=default_model, help=f"backbone from the zoo (default {default_model})")
    p.add_argument("--checkpoint", default="default",
                   help="'default' (the model's best shipped checkpoint: `tinytrain models`), 'pocket', 'pocket-long' or 'distilled' (shipped), 'random', 'imagenet' (mobilenetv2-1.0) or a checkpoint path")
    p.add_argument("--resolution", type=RESOLUTION, default=None,
                   help="input resolution in pixels (default: the checkpoint's training resolution, else 128)")
    p.add_argument("--background", default=None, metavar="COLOUR",
                   help="what transparent pixels are composited onto: white (default), black, grey, R,G,B or #RRGGBB")


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
    p = one_line_errors(sub.add_parser("adapt", help="adapt a model to a few labelled images (one folder per class)"))
    add_model_arguments(p)
    p.add_argument("--support", required=True, metavar="DIR", help="support images, DIR/<class>/<image>")
    p.add_argument("--query", metavar="DIR", help="optional labelled query images to report accuracy on")
    p.add_argument("--method", default="tinytrain", help="none|lastlayer|fulltrain|tinytl|sparseupdate|tinytrain")
    add_budget_arguments(p)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. ratio_policy=largest or stop_rule=first for tinytrain, bias=no for "
                        "tinytl, augment_pool=8 for any trained method (repeatable; an unknown key is refused with "
                        "the method's valid keys; docs/engine.md lists them)")
    p.add_argument("--iterations", type=ITERATIONS, default=40,
                   help=f"fine-tuning iterations, 0 to {MAX_ITERATIONS:,} (default 40, as the paper)")
    p.add_argument("--lr", type=learning_rate(note="; --method none trains nothing"), default=1e-3, help=f"learning rate, up to {MAX_LR:g} (default 1e-3)")
    p.add_argument("--seed", type=SEED, default=0)
    add_policy_argument(p)
    p.add_argument("--save", metavar="OUT", help="write the adapted model and prototypes to this directory")
    p.add_argument("--overwrite", action="store_true", help="let --save replace a model saved there before")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (shown on a terminal's stderr)")
    p.set_defaults(func=run_adapt)

    q = one_line_errors(sub.add_parser("predict", help="classify images with a model saved by `tinytrain adapt --save`"))
    q.add_argument("--model-dir", required=True, metavar="OUT", help="directory written by `adapt --save`")
    q.add_argument("images", nargs="+", help="image files or folders (an unreadable file is reported and skipped; "
                   "the exit status is then 2)")
    q.add_argument("--top", type=whole_number("--top", 1, hint="e.g. 3 to list the three likeliest classes"),
                   default=1, help="also list the top-k classes (default 1)")
    q.add_argument("--background", default=None, metavar="COLOUR",
                   help="what transparent pixels are composited onto (default: what the model was adapted with)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=run_predict)


def load_model_for_task(args, support_dir: str, query_dir: str | None = None):
    """--model/--checkpoint/--resolution/--background -> (backbone, resolution, where it came from,
    background, support, query). Shared by `adapt` and `plan`."""
    from ..deploy.images import check_task_folders, parse_background
    from ..deploy.session import load_task_folders, resolve_resolution
    from ..models.weights import load_backbone
    import torch

    background = parse_background(args.background)
    folders = check_task_folders(support_dir, query_dir)     # before the model: errors name --support / --query
    torch.manual_seed(args.seed)   # a 'random' checkpoint is then reproducible
    backbone = load_backbone(args.model, args.checkpoint)
    resolution, source = resolve_resolution(backbone.checkpoint_info.resolution, args.resolution)
    support, query = load_task_folders(*folders, resolution, background)
    return backbone, resolution, source, background, support, query


def run_adapt(args) -> int:
    import sys

    from ..deploy.adapted import check_save_target, save_adapted
    from ..deploy.session import adapt_to_support, resolve_budgets
    from ..methods.base import AdaptConfig
    from ..methods.options import parse_options
    from ..progress import ProgressBars, report_to

    # --iterations, --lr, --seed and --resolution were checked as the command line was read
    if args.sparseupdate_policy and args.method != "sparseupdate":
        raise BadInput("--sparseupdate-policy is for --method sparseupdate")
    try:    # the method's options class checks keys and values, before any work
        options = parse_options(args.option, args.method, "--option")
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if args.sparseupdate_policy:
        options["policy"] = args.sparseupdate_policy
    budgets = resolve_budgets(args.memory_budget, args.compute_budget, args.device)
    if args.save:
        check_save_target(args.save, args.overwrite)       # before any work: nothing is trained in vain
    backbone, resolution, source, background, support, query = load_model_for_task(args, args.support, args.query)
    config = AdaptConfig(iterations=args.iterations, lr=args.lr, seed=args.seed, resolution=resolution,
                         options=options)
    bars = ProgressBars(enabled=not args.no_progress and sys.stderr.isatty())
    try:
        with report_to(bars):
            adapted, summary = adapt_to_support(backbone, args.model, support, query, args.method, config, budgets,
                                                info={"checkpoint": backbone.checkpoint_info.source},
                                                head=backbone.checkpoint_info.head(), background=background)
    finally:
        bars.close()
    summary["resolution_from"] = source
    summary["options"] = applied_options(adapted.report)
    if args.save:
        summary["saved_to"] = str(save_adapted(args.save, adapted, overwrite=args.overwrite))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def applied_options(report: dict) -> dict | None:
    """The options the method ran with (every key, plain values), from its report."""
    return (report.get("extra") or {}).get("options")


def format_summary(s: dict) -> str:
    from ..costs.units import format_bytes, format_macs
    from ..methods.options import changed_options

    lines = [f"{s['method']} on {s['model']} at {s['resolution']} px"
             + (f" ({s['resolution_from']})" if s.get("resolution_from") else "")
             + f": {s['support_images']} support images, {len(s['classes'])} classes"
             + (" (mixed sizes, resized)" if s.get("mixed_image_sizes") else "")
             + (f"; {s['ignored_metadata_files']} macOS '._' files ignored" if s.get("ignored_metadata_files") else "")]
    if s.get("plan"):
        lines.append(f"{'layer':>5}  {'name':<16} {'channels':>12}  {'score':>10}")
        for r in s["plan"]:
            score = r.get("score")
            lines.append(f"{'-' if r.get('layer') is None else r['layer']:>5}  {r['name']:<16} {r['channels_updated']:>5} / {r['channels_total']:<5} "
                         f"{'-' if score is None else f'{score:.4g}':>10}")
    else:
        lines.append("plan: no backbone weights are updated")
    changed = changed_options(s["method"], s.get("options"))
    if changed:
        lines.append("options: " + ", ".join(f"{k}={v}" for k, v in changed.items()) + " (the others at their "
                     "defaults)")
    mem = s.get("predicted_memory_bytes")
    lines.append(f"predicted backward memory: {format_bytes(mem) if mem else 0}"
                 + (f" (budget {format_bytes(s['memory_budget_bytes'])})" if s.get("memory_budget_bytes") else ""))
    if s.get("measured_saved_bytes") is not None:
        lines.append(f"measured saved-for-backward: {format_bytes(s['measured_saved_bytes'])}")
    lines.append(f"backward MACs: {format_macs(s.get('backward_macs') or 0)}"
                 + (f" (budget {format_macs(s['compute_budget_macs'])})" if s.get("compute_budget_macs") else ""))
    if s.get("budgets_from") and "default" in s["budgets_from"]:
        lines.append(f"budgets: {s['budgets_from']} (set --memory-budget / --compute-budget or --device to change)")
    lines.append(f"time: selection {s.get('selection_seconds') or 0:.2f} s, training {s.get('train_seconds') or 0:.2f} s")
    if "query_accuracy" in s:
        lines.append(f"query accuracy: {100 * s['query_accuracy']:.1f} % on {s['query_images']} images")
    if s.get("saved_to"):
        lines.append(f"saved to {s['saved_to']} (use `tinytrain predict --model-dir {s['saved_to']} IMAGES...`)")
    return "\n".join(lines)


def run_predict(args) -> int:
    import sys

    from ..deploy.adapted import classify, load_adapted
    from ..deploy.images import collect_image_paths, load_images_skipping, parse_background

    background = parse_background(args.background) if args.background else None
    adapted = load_adapted(args.model_dir)
    paths, ignored = collect_image_paths(args.images)
    x, kept, errors = load_images_skipping(paths, adapted.resolution, background or adapted.background)
    if x is None:
        raise BadInput(f"none of the {len(paths)} images could be read; first: {errors[0]}")
    results = classify(adapted, x, args.top)
    for p, r in zip(kept, results):
        r["image"] = str(p)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            extra = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in r["top"]) if args.top > 1 else ""
            print(f"{r['image']}\t{r['label']}" + (f"\t({extra})" if extra else ""))
    if ignored:
        print(f"tinytrain predict: note: {ignored} macOS '._' metadata files ignored", file=sys.stderr)
    for e in errors:
        print(f"tinytrain predict: error: {e}", file=sys.stderr)
    if errors:
        print(f"tinytrain predict: {len(errors)} of {len(paths)} images could not be read; the others are "
              "classified above", file=sys.stderr)
        return 2
    return 0
