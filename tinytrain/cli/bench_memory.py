"""`tinytrain bench memory`: the command line of tinytrain.bench.memory (measure_memory)."""
from __future__ import annotations

import argparse
import json
import sys

from .bench import bench_library

# = tinytrain.bench.memory.DEFAULT_METHODS
DEFAULT_METHODS = ("none", "lastlayer", "sparseupdate", "tinytrain", "tinytl", "fulltrain")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mcunet-5fps")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated methods to measure")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=20, help="support images per class (5 x 20 = one batch of 100)")
    p.add_argument("--iterations", type=int, default=3,
                   help="fine-tuning iterations per method (peak memory is reached in the first; default 3)")
    p.add_argument("--memory-budget", default="1MB", help="TinyTrain's memory budget (default 1MB)")
    p.add_argument("--compute-budget", default="15%", help="TinyTrain's compute budget (default 15%%)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per child (default 1)")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per child")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    with bench_library("memory"):
        from ..bench.memory import MemorySettings, measure_memory
    settings = MemorySettings(
        model=args.model, resolution=args.resolution,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), ways=args.ways, shots=args.shots,
        iterations=args.iterations, memory_budget=args.memory_budget, compute_budget=args.compute_budget,
        threads=args.threads, timeout=args.timeout)
    progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    result = measure_memory(settings, progress)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0
