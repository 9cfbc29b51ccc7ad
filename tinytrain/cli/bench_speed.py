"""`tinytrain bench speed`: the command line of tinytrain.bench.speed (measure_speed)."""
from __future__ import annotations

import argparse
import json

from .bench import bench_library

DEFAULT_POOL = 0      # = tinytrain.bench.speed.DEFAULT_POOL: fresh augmentation, as the methods train by default
PROFILED = ("fulltrain", "sparseupdate", "tinytrain", "tinytrain-masked")     # = tinytrain.bench.speed.METHODS


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
    p.add_argument("--profile", metavar="METHOD", choices=PROFILED,
                   help="after the rounds, run torch.profiler over 10 more iterations of METHOD and print its top ops")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def add_timing_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared with `bench e2e`."""
    p.add_argument("--threads", type=int, default=1, help="torch threads, pinned to as many CPUs (default 1)")
    p.add_argument("--augment-pool", type=int, default=DEFAULT_POOL, metavar="P",
                   help="pseudo-queries from P augmented views drawn once, for every method; default 0: fresh "
                        "augmentation every iteration, as the methods train by default")
    p.add_argument("--cache-budget", default="none",
                   help="memory the support cache and the pool may hold, e.g. 4MB (default: none, unbounded)")


def run(args) -> int:
    with bench_library("speed"):
        from ..bench.speed import SpeedSettings, measure_speed
    result = measure_speed(SpeedSettings(
        model=args.model, resolution=args.resolution, ways=args.ways, shots=args.shots, batch_size=args.batch_size,
        iterations=args.iterations, threads=args.threads, augment_pool=args.augment_pool,
        cache_budget=args.cache_budget, profile=args.profile, seed=args.seed))
    print(json.dumps(result.to_dict()) if args.json else result.table())
    return 0
