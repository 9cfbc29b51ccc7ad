"""`tinytrain bench speed`: one task, side by side in one run — training-iteration wall time and measured
saved-for-backward bytes of FullTrain, SparseUpdate, TinyTrain and a masked TinyTrain reference (same
channels, dense model, full backward, gradients of other channels zeroed: how peers do it).

Every method runs the same P>M>F iteration (prototypes, augmented pseudo-query, Adam) on the same
images with the same micro-batch and the same pseudo-queries (`--augment-pool` views drawn once, or
fresh augmentation with 0), so the ratios isolate what the update scheme costs. The methods'
iterations are interleaved round-robin (`bench/timing.py`): each round runs one iteration of every
method, and the ratios are medians of per-round ratios, with their spread.
"""
from __future__ import annotations

import argparse
import json

from typing import TYPE_CHECKING

from .timing import format_ratio, pin_threads, ratio_spread, round_robin, spread
from ..errors import BadInput

if TYPE_CHECKING:       # torch and the methods are imported where they run: `bench speed --help` needs neither
    import torch

DEFAULT_POOL = 0      # fresh augmentation, as the methods train by default


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mcunet-5fps", help="zoo model (default mcunet-5fps)")
    p.add_argument("--resolution", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None,
                   help="micro-batch for every method (default: the whole support set)")
    p.add_argument("--iterations", type=int, default=10,
                   help="timed rounds, one iteration of every method each, after one warm-up round (default 10)")
    add_timing_arguments(p)
    p.add_argument("--profile", metavar="METHOD",
                   choices=("fulltrain", "sparseupdate", "tinytrain", "tinytrain-masked"),
                   help="after the rounds, run torch.profiler over 10 more iterations of METHOD and print its top ops")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def profile_steps(step, iterations: int = 10, rows: int = 15) -> str:
    """torch.profiler's table (by self CPU time) of `iterations` calls of `step`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iterations):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def add_timing_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared with `bench e2e`."""
    p.add_argument("--threads", type=int, default=1, help="torch threads, pinned to as many CPUs (default 1)")
    p.add_argument("--augment-pool", type=int, default=DEFAULT_POOL, metavar="P",
                   help="pseudo-queries from P augmented views drawn once, for every method; default 0: fresh "
                        "augmentation every iteration, as the methods train by default")
    p.add_argument("--cache-budget", default="none",
                   help="memory the support cache and the pool may hold, e.g. 4MB (default: none, unbounded)")


def synthetic_task(ways: int, shots: int, res: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible task of noisy class templates (timing does not need real images)."""
    import torch
    if ways < 2 or shots < 1:
        raise BadInput("the benches need --ways >= 2 and --shots >= 1")
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(ways).repeat_interleave(shots)
    x = torch.randn(ways, 1, 3, res, res, generator=g).repeat(1, shots, 1, 1, 1).flatten(0, 1)
    x = x + 0.5 * torch.randn(x.shape, generator=g)
    return x, y


_task = synthetic_task      # the name older scripts import


def loop_options(args) -> dict:
    """AdaptConfig options for the benches' loop settings."""
    if args.augment_pool < 0:
        raise BadInput(f"--augment-pool must be >= 0 (got {args.augment_pool}); 0 = fresh augmentation")
    return {"augment_pool": args.augment_pool, "cache_budget": args.cache_budget}


def run(args) -> int:
    import torch

    from ..methods.base import AdaptConfig, plan_rows
    from ..methods.common import FineTuner, check_support, storages_of
    from ..methods.fulltrain import FullTrainMethod
    from ..methods.sparseupdate import SparseUpdateMethod
    from ..methods.tinytrain import TinyTrainMethod
    from ..methods.trained import private_copy
    from ..models.backbone import build_backbone
    from ..sparse.accounting import predicted_saved_bytes
    from ..sparse.reference import MaskedReference
    if args.iterations < 1:
        raise BadInput("--iterations must be at least 1 (one warm-up round runs before the timed ones)")
    pinned = pin_threads(args.threads)
    torch.manual_seed(args.seed)
    backbone = build_backbone(args.model)
    x, y = check_support(*synthetic_task(args.ways, args.shots, args.resolution, args.seed))
    batch = args.batch_size or len(x)
    options = loop_options(args)
    cfg = AdaptConfig(iterations=args.iterations + 1, lr=1e-3, batch_size=batch, seed=args.seed,
                      resolution=args.resolution, options=options)
    tt = TinyTrainMethod(backbone, cfg)
    tt_built = tt._build(x, y)
    su_built = SparseUpdateMethod(backbone, cfg)._build(x, y)
    ft_built = FullTrainMethod(backbone, cfg)._build(x, y)
    ref = MaskedReference(private_copy(backbone), tt_built.engine_plan)
    models = {"fulltrain": (ft_built.model, None), "sparseupdate": (su_built.model, None),
              "tinytrain": (tt_built.model, None), "tinytrain-masked": (ref, ref.mask_gradients)}
    budget = tt.cache_budget
    tuners = {name: FineTuner(model, x, y, tt.head, cfg, 1e-3, batch, exclude_storages=storages_of(model),
                              before_step=before, cache_budget=budget, augment_pool=args.augment_pool)
              for name, (model, before) in models.items()}
    times = round_robin({name: t.step for name, t in tuners.items()}, rounds=args.iterations, warmup=1)
    spec, res, nb = backbone.spec, args.resolution, min(batch, len(x))
    predicted = {"sparseupdate": predicted_saved_bytes(spec, su_built.engine_plan, nb, res),
                 "tinytrain": predicted_saved_bytes(spec, tt_built.engine_plan, nb, res)}
    results = {name: {"seconds_per_iteration": spread(times[name])["median"], "spread": spread(times[name]),
                      "setup_seconds": t.setup_seconds, "measured_saved_bytes": int(t.measured),
                      "predicted_saved_bytes": predicted.get(name)}
               for name, t in tuners.items()}
    t = results["tinytrain"]
    ratios = {f"{name.replace('tinytrain-', '')}_over_tinytrain_time": ratio_spread(times[name], times["tinytrain"])
              for name in ("fulltrain", "sparseupdate", "tinytrain-masked")}
    kept = max(1, t["measured_saved_bytes"])
    ratios["fulltrain_over_tinytrain_saved_bytes"] = results["fulltrain"]["measured_saved_bytes"] / kept
    ratios["masked_over_tinytrain_saved_bytes"] = results["tinytrain-masked"]["measured_saved_bytes"] / kept
    ratios["tinytrain_measured_over_predicted_saved_bytes"] = t["measured_saved_bytes"] / max(1, t["predicted_saved_bytes"])
    out = {"model": args.model, "resolution": res, "support": len(x), "batch_size": batch, "rounds": args.iterations,
           "augment_pool": args.augment_pool, "caches": tuners["tinytrain"].caches.to_dict(), **pinned,
           "tinytrain_plan": [r.to_dict() for r in plan_rows(spec, tt_built.update_plan, tt_built.scores)], "methods": results, "ratios": ratios}
    if args.profile:
        out["profile"] = profile_steps(tuners[args.profile].step)
    if args.json:
        print(json.dumps(out))
        return 0
    pool = f"a pool of {args.augment_pool} augmented views" if args.augment_pool else "fresh augmentation"
    print(f"{args.model} @ {res}px, support {len(x)}, micro-batch {batch}, {pool}, {pinned['threads']} thread(s) "
          f"pinned, load average {pinned['load_average']}; {args.iterations} round-robin rounds after a warm-up")
    print(f"{'method':<18}{'s/iter':>9}{'(IQR)':>17}{'set-up s':>10}{'saved bytes':>14}{'predicted':>12}")
    for name, r in results.items():
        pred = "" if r["predicted_saved_bytes"] is None else str(r["predicted_saved_bytes"])
        iqr = f"{r['spread']['q1']:.4f}-{r['spread']['q3']:.4f}"
        print(f"{name:<18}{r['seconds_per_iteration']:>9.4f}{iqr:>17}{r['setup_seconds']:>10.3f}"
              f"{r['measured_saved_bytes']:>14}{pred:>12}")
    for k, v in ratios.items():
        print(f"{k}: {format_ratio(v) if isinstance(v, dict) else f'{v:.2f}x'}")
    if args.profile:
        print(f"torch.profiler, 10 iterations of {args.profile}:\n{out['profile']}")
    return 0
