"""`tinytrain bench e2e`: the command line of tinytrain.bench.e2e (measure_e2e)."""
from __future__ import annotations

import argparse
import json
import sys

from .bench import bench_library
from .bench_speed import add_timing_arguments

DEFAULT_METHODS = ("fulltrain", "sparseupdate", "tinytrain")    # = tinytrain.bench.e2e.DEFAULT_METHODS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mcunet-5fps", help="zoo model (default mcunet-5fps)")
    p.add_argument("--checkpoint", default="pocket",
                   help="shipped checkpoint name or path (default pocket; a model without one runs from random init)")
    p.add_argument("--resolution", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated methods (default {','.join(DEFAULT_METHODS)}; tinytrain is required)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5, help="support images per class (default 5: 25 images, as Table 9)")
    p.add_argument("--iterations", type=int, default=40, help="fine-tuning iterations (default 40, as the paper)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="micro-batch of every pass, the Fisher pass included (default: the whole support set)")
    p.add_argument("--rounds", type=int, default=3,
                   help="round-robin rounds, one adaptation per method each (default 3)")
    add_timing_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="PNG", help="also write a stacked-bar plot of the phases to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args) -> int:
    with bench_library("e2e"):
        from ..bench.e2e import E2ESettings, measure_e2e
    settings = E2ESettings(
        model=args.model, checkpoint=args.checkpoint, resolution=args.resolution,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), ways=args.ways, shots=args.shots,
        iterations=args.iterations, batch_size=args.batch_size, rounds=args.rounds, threads=args.threads,
        augment_pool=args.augment_pool, cache_budget=args.cache_budget, seed=args.seed, plot=args.plot)
    result = measure_e2e(settings, progress=None if args.json else (lambda line: print(line, file=sys.stderr)))
    print(json.dumps(result.to_dict()) if args.json else result.table())
    return 0
