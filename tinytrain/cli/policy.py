"""`tinytrain sparseupdate-policy`: derive SparseUpdate's static policy for a model without a published one.

SparseUpdate's contribution analysis (Lin et al. 2022, sec. 3.3; `tinytrain.methods.sparseupdate.
derive_static_policy`), run once, offline, on episodes of the source domain's VALIDATION classes (never
test classes), under the same memory budget as TinyTrain (default 1 MB). The JSON it writes is read by the
`sparseupdate` method as options["policy"] / options["derived_policy"], or, saved as
tinytrain/zoo/<model>-sparseupdate.json, found automatically.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..jsonfile import write_json_atomic
from ..errors import BadInput
from .adapt import MAX_ITERATIONS, RESOLUTION, SEED, learning_rate, one_line_errors


def register(sub) -> None:
    p = one_line_errors(sub.add_parser("sparseupdate-policy",
                       help="derive SparseUpdate's static policy by contribution analysis (offline, validation "
                            "classes of the source domain)",
                       description="Run SparseUpdate's contribution analysis once: fine-tune the biases of the last "
                                   "k layers, and each candidate layer at input-channel ratios 1, 1/2, 1/4, 1/8, on "
                                   "validation episodes; choose the policy with the largest summed query-loss gain "
                                   "within the memory budget; write it as JSON."))
    p.add_argument("--model", required=True, help="zoo model id (see `tinytrain models`)")
    p.add_argument("--checkpoint", default="pocket",
                   help="'pocket' or 'pocket-long' (shipped), 'imagenet' (mobilenetv2-1.0), 'random' or a "
                   "checkpoint path (default: %(default)s)")
    p.add_argument("--data", default="pocket-symbols",
                   help="source dataset whose VALIDATION classes are used: a pocket source or Meta-Dataset "
                        "'SOURCE:PATH' with a val split, or a class-per-folder path (every 5th class held out) "
                        "(default: %(default)s)")
    p.add_argument("--memory-budget", default=None,
                   help="Table-2 memory budget, e.g. 1MB, 512KB (default: TinyTrain's, 1MB; overrides --device)")
    p.add_argument("--device", default=None, help="device profile whose memory budget to use")
    p.add_argument("--resolution", type=RESOLUTION, default=None,
                   help="input size (default: the checkpoint's training resolution, else 128)")
    p.add_argument("--episodes", type=int, default=5, help="calibration episodes, averaged (default: %(default)s)")
    p.add_argument("--ways", type=int, default=5, help="classes per episode (at most the validation classes; "
                                                       "default: %(default)s)")
    p.add_argument("--shots", type=int, default=5, help="support images per class (default: %(default)s)")
    p.add_argument("--queries", type=int, default=10, help="held-out query images per class (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=40,
                   help="fine-tuning iterations per measurement, as the method uses (default: %(default)s)")
    p.add_argument("--lr", type=learning_rate(), default=1e-3, help="fine-tuning learning rate (default: %(default)s)")
    p.add_argument("--bias-blocks", default="1-6",
                   help="bias options: the biases of the last b blocks for b in this range (default: %(default)s)")
    p.add_argument("--seed", type=SEED, default=0, help="episodes and augmentation draws (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="JSON", help="where to write the policy (written atomically)")
    p.add_argument("--json", action="store_true", help="print the whole policy JSON instead of a summary")
    p.add_argument("--quiet", action="store_true", help="no per-measurement progress lines")
    p.set_defaults(func=run)


def _check_args(args) -> tuple[tuple[int, int], Path]:
    from ..data.episodes import parse_range
    from ..models.specs import get_spec

    for flag, value, low in (("--episodes", args.episodes, 1), ("--iterations", args.iterations, 1),
                             ("--ways", args.ways, 2), ("--shots", args.shots, 1), ("--queries", args.queries, 1)):
        if value < low:
            raise BadInput(f"{flag} must be >= {low} (got {value})")
    if args.iterations > MAX_ITERATIONS:
        raise BadInput(f"--iterations must be at most {MAX_ITERATIONS:,} (got {args.iterations:,}); the method "
                        "uses 40")
    if not args.lr > 0:
        raise BadInput(f"--lr must be positive (got {args.lr})")
    if args.resolution is not None and args.resolution < 8:
        raise BadInput(f"--resolution must be at least 8 (got {args.resolution})")
    get_spec(args.model)      # ValueError naming the known models
    try:
        blocks = parse_range(args.bias_blocks, "--bias-blocks")
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise BadInput(f"--out {out} is a folder; give a file name such as "
                        f"{out / (args.model + '-sparseupdate.json')}")
    if not out.parent.is_dir():
        raise BadInput(f"--out: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise BadInput(f"--out: folder {out.parent} is not writable")
    return blocks, out


def _validation_set(data: str):
    from ..offline.episodes import open_source_splits
    try:
        return open_source_splits(data)[1]
    except ValueError as exc:
        raise BadInput(f"--data {data!r} has no validation classes to calibrate on ({exc}); use the source "
                        "domain (pocket-symbols), a Meta-Dataset 'SOURCE:PATH' with a val split, or a "
                        "class-per-folder source with at least 10 classes") from None


def run(args) -> int:
    import torch

    from ..deploy.session import DEFAULT_RESOLUTION
    from ..costs.baselines import SPARSEUPDATE_POLICIES
    from ..costs.units import format_bytes
    from ..data.sampler import EpisodeSampler, load_task
    from ..deploy.session import resolve_budgets
    from ..methods.sparseupdate_policy import derive_static_policy
    from ..methods.tinytrain import DEFAULT_MEMORY_BUDGET
    from ..models.weights import load_backbone

    (lo_blocks, hi_blocks), out = _check_args(args)
    budgets = resolve_budgets(args.memory_budget, None, args.device)
    budget = budgets.memory_bytes if budgets.memory_bytes is not None else DEFAULT_MEMORY_BUDGET
    val = _validation_set(args.data)
    torch.manual_seed(args.seed)          # a 'random' checkpoint is then reproducible
    backbone = load_backbone(args.model, args.checkpoint).eval()
    head = backbone.checkpoint_info.head()
    res = args.resolution or backbone.checkpoint_info.resolution or DEFAULT_RESOLUTION
    ways = min(args.ways, len(val.classes))
    if ways < 2:
        raise BadInput(f"{val.name} has {len(val.classes)} validation class(es); episodes need at least 2")
    sampler = EpisodeSampler(val, mode="fixed", ways=ways, shots=args.shots, queries=args.queries, seed=args.seed)
    tasks = [load_task(val, ep, res) for ep in sampler.sample(args.episodes)]
    if args.model in SPARSEUPDATE_POLICIES:
        print(f"note: {args.model} has published SparseUpdate policies, which the method uses unless this one is "
              f"passed as options['policy']")
    log = None if args.quiet else (lambda msg: print(f"  {msg}", flush=True))
    if log:
        print(f"contribution analysis of {args.model} at {res} px on {len(tasks)} {ways}-way {args.shots}-shot "
              f"{args.queries}-query episodes of {val.name} (validation classes), {args.iterations} iterations, "
              f"lr {args.lr:g}", flush=True)
    t0 = time.perf_counter()
    policy = derive_static_policy(backbone, tasks, memory_budget=budget, iterations=args.iterations, lr=args.lr,
                                  seed=args.seed, head=head, bias_blocks=range(lo_blocks, hi_blocks + 1),
                                  progress=log)
    policy["derived_with"] = {
        "command": "tinytrain sparseupdate-policy", "checkpoint": backbone.checkpoint_info.source,
        "data": args.data, "split": "val", "dataset": val.name, "episodes": len(tasks), "ways": ways,
        "shots": args.shots, "queries": args.queries, "iterations": args.iterations, "lr": args.lr,
        "seed": args.seed, "seconds": round(time.perf_counter() - t0, 2)}
    write_json_atomic(out, policy)
    if args.json:
        print(json.dumps(policy, indent=1))
        return 0
    layers = backbone.conv_layers(res)
    n = len(layers)
    print(f"SparseUpdate policy for {args.model} at {res} px: biases of the last {policy['n_bias']} conv layers "
          f"({n - policy['n_bias']}..{n - 1}) and weights of:")
    for i, r in policy["ratios"].items():
        print(f"  layer {int(i):>3} {layers[int(i)].name:<18} input-channel ratio {r:g}")
    if not policy["ratios"]:
        print("  (no weights: no layer's contribution is positive within the budget)")
    print(f"memory (Table 2): {policy['memory_bytes']} B ({format_bytes(policy['memory_bytes'])}) within the budget "
          f"of {budget} B ({format_bytes(budget)}); "
          f"{policy['contributions']['fine_tuning_runs']} fine-tuning runs in {time.perf_counter() - t0:.1f} s")
    print(f"written to {out}")
    return 0
