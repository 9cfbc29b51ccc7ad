"""`tinytrain bench pool`: the command line of tinytrain.bench.pool (measure_pool)."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import BadInput

from .bench import bench_library


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def show_episode(counter: str) -> None:
    """The episode counter on one stderr line, each one over the one before."""
    print(f"\r{counter}", end="", file=sys.stderr, flush=True)


def pool_sizes(text: str) -> tuple[int, ...]:
    """--pools '1,4,8' -> (1, 4, 8); anything else is one line naming the flag."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BadInput(f"--pools takes comma-separated whole numbers such as 1,4,8 (got {text!r})") from None


def run(args) -> int:
    with bench_library("pool"):
        from ..bench.pool import PoolSettings, measure_pool
    settings = PoolSettings(
        model=args.model, checkpoint=args.checkpoint, domain=args.domain, resolution=args.resolution,
        pools=pool_sizes(args.pools), episodes=args.episodes, ways=args.ways,
        shots=args.shots, queries=args.queries, iterations=args.iterations, lr=args.lr, threads=args.threads,
        seed=args.seed)
    result = measure_pool(settings, progress=None if args.json else show_episode)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(file=sys.stderr)      # end the episode counter's line
        print(result.table())
    return 0
