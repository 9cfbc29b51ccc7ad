"""`tinytrain bench pool`: what a fixed pool of augmented views costs in accuracy, against fresh augmentation.

With `augment_pool` P the pseudo-queries are P augmented views of the support set drawn once (their prefix
outputs cached) instead of a new draw every iteration; this changes the training, so its effect is measured
here: TinyTrain on the same validation episodes (held-out validation classes, never test classes) with fresh
augmentation and with each pool size, same seed per episode; reported as mean query accuracy and the paired
difference to fresh augmentation with its 95 % interval.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .stats import mean_ci
from ..errors import BadInput


def add_arguments(p) -> None:
    p.add_argument("--model", default="mcunet-5fps", help="zoo model (default mcunet-5fps)")
    p.add_argument("--checkpoint", default="pocket", help="checkpoint (default the shipped 'pocket')")
    p.add_argument("--domain", default=None,
                   help="a domain with a 'val' split (default the pocket source, built on first use), or a "
                        "class-per-folder path whose classes all count as validation classes")
    p.add_argument("--resolution", type=int, default=None, help="input size (default the checkpoint's)")
    p.add_argument("--pools", default="1,4,8", help="pool sizes compared with fresh augmentation (default 1,4,8)")
    p.add_argument("--episodes", type=int, default=60, help="validation episodes (default 60)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    import torch

    from ..methods import make_method
    from ..methods.base import AdaptConfig
    from ..data.sampler import EpisodeSampler, load_task
    from ..models.weights import load_backbone
    from .episodes import open_domain
    from .evalconfig import checkpoint_resolution

    pools = sorted({int(v) for v in args.pools.split(",") if v.strip()})
    if not pools or min(pools) < 1:
        raise BadInput("--pools: give pool sizes >= 1, e.g. 1,4,8 (fresh augmentation is always the reference)")
    if args.episodes < 2:
        raise BadInput("--episodes must be at least 2 (the interval needs two)")
    torch.set_num_threads(args.threads)
    if args.domain is None:
        from ..data.pocket import POCKET_SOURCE, ensure_pocket
        ensure_pocket()
        domain = POCKET_SOURCE
    else:
        domain = args.domain
    # a class-per-folder path has no splits: all its classes serve as validation classes (the user's choice)
    split = "all" if Path(domain).expanduser().is_dir() else "val"
    dataset = open_domain(domain, split)
    res = args.resolution or checkpoint_resolution(args.model, args.checkpoint)
    backbone = load_backbone(args.model, args.checkpoint)
    sampler = EpisodeSampler(dataset, mode="fixed", ways=args.ways, shots=args.shots, queries=args.queries,
                             seed=args.seed)
    labels = ["fresh"] + [f"pool {p}" for p in pools]
    acc: dict[str, list[float]] = {k: [] for k in labels}
    t0 = time.perf_counter()
    for i in range(args.episodes):
        task = load_task(dataset, sampler.episode(i), res)
        for label, pool in zip(labels, [0] + pools):
            cfg = AdaptConfig(iterations=args.iterations, lr=args.lr, resolution=res, seed=args.seed * 100_003 + i,
                              options={"augment_pool": pool})
            torch.manual_seed(cfg.seed)
            head = backbone.checkpoint_info.head()
            pred = make_method("tinytrain", backbone, cfg, head).fit(task.support_x, task.support_y)
            acc[label].append(pred.accuracy(task.query_x, task.query_y))
        if not args.json:
            print(f"\repisode {i + 1}/{args.episodes}", end="", file=sys.stderr, flush=True)
    if not args.json:
        print(file=sys.stderr)
    out = {"model": args.model, "checkpoint": args.checkpoint, "domain": f"{domain} ({split})", "resolution": res,
           "episodes": args.episodes, "ways": args.ways, "shots": args.shots, "queries": args.queries,
           "iterations": args.iterations, "lr": args.lr, "seconds": time.perf_counter() - t0, "rows": {}}
    for label in labels:
        m = mean_ci(acc[label])
        d = mean_ci([a - b for a, b in zip(acc[label], acc["fresh"])])
        out["rows"][label] = {"accuracy": m.mean, "ci95": m.ci95,
                              "minus_fresh": None if label == "fresh" else d.mean,
                              "minus_fresh_ci95": None if label == "fresh" else d.ci95}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"TinyTrain on {args.episodes} {args.ways}-way {args.shots}-shot validation episodes of {domain} "
          f"({args.model}, {args.checkpoint}, {res} px, {args.iterations} iterations, lr {args.lr:g})")
    print(f"{'pseudo-queries':<16}{'accuracy %':>16}{'minus fresh (points)':>24}")
    for label, r in out["rows"].items():
        diff = "" if r["minus_fresh"] is None else f"{100 * r['minus_fresh']:+.2f} ± {100 * r['minus_fresh_ci95']:.2f}"
        print(f"{label:<16}{100 * r['accuracy']:>10.2f} ± {100 * r['ci95']:.2f}{diff:>24}")
    return 0
