"""`tinytrain demo`: the whole pipeline in minutes on a laptop CPU.

Builds (or reuses) the offline pocket benchmark, loads the shipped mcunet-5fps checkpoint, runs every
method on a few identical episodes of two pocket targets (one where training pays, one where it does not),
and prints the accuracy and cost tables and where the plots are. It is `tinytrain eval` with small,
printed settings.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ..errors import BadInput
from .evaluate import add_run_arguments, config_from_args, print_summary

# Sized to finish in under 10 minutes on 2 CPU cores including the pocket build (docs/results/2026-12-05-demo.md has
# the measured time). Two targets: pocket-textures, where training pays on the distilled backbone (the main
# table: +1.4 to +2.4 points over `none`), and pocket-scripts, where it does not. Learning rates by P>M>F's
# protocol, as in the main table: per domain and method, the best of the grid on held-out episodes of that
# target (never a test episode), so "no update" (lr 0) wins where training does not pay. Episodes as in the
# main table: Meta-Dataset-style variable way/shot, capped at 10 ways and 25 support images for the CPU.
DEMO_DEFAULTS = {"model": "mcunet-5fps", "checkpoint": "default",
                 "domains": "pocket-textures,pocket-scripts", "methods": "all", "tasks": 8,
                 "iterations": 20, "lr": "target-val", "mode": "metadataset", "max_ways": 10, "max_support": 25,
                 "workers": max(1, min(2, os.cpu_count() or 1)), "out": "tinytrain-demo"}


def run(args: argparse.Namespace) -> int:
    from ..bench.harness import run_eval
    from ..bench.summary import describe_episodes, describe_lr, write_run_report
    from ..data.pocket import ensure_pocket, pocket_root
    from ..models.weights import load_backbone

    t0 = time.perf_counter()
    config = config_from_args(args)
    print("tinytrain demo: every method on identical few-shot episodes of the pocket benchmark")
    print(f"  model {config.model} (checkpoint '{config.checkpoint}'), {config.resolution}x{config.resolution} "
          f"inputs, {config.iterations} fine-tuning iterations (Adam)")
    print(f"  learning rates: {describe_lr(config)}; never chosen on test episodes")
    print(f"  {config.tasks} tasks per domain, {describe_episodes(config)}; domains: {', '.join(config.domains)}")
    print(f"  methods: {', '.join(v.label for v in config.variants)}; {args.workers} worker process(es)")
    print(f"  results and plots go to {Path(args.out).resolve()} (rerunning resumes)")

    print(f"[1/3] pocket benchmark at {pocket_root()} ...", flush=True)
    t = time.perf_counter()
    ensure_pocket()
    print(f"      ready ({time.perf_counter() - t:.0f} s)")
    print(f"[2/3] checkpoint {config.model}/{config.checkpoint} ...", flush=True)
    try:
        info = load_backbone(config.model, config.checkpoint).checkpoint_info
    except FileNotFoundError as exc:
        raise BadInput(f"{exc}. The demo needs the shipped checkpoint; reinstall tinytrain or pass --checkpoint PATH")
    print(f"      loaded ({info.source})")
    print("[3/3] adapting and evaluating ...", flush=True)
    out = Path(args.out)
    records = run_eval(config, out, workers=args.workers, progress=not args.no_progress)
    text, files = write_run_report(out, config, records)
    print()
    print_summary(text, files, out)
    by = {r["method"]: r for r in records}
    if "tinytrain" in by and "fulltrain" in by:
        mem = lambda m: sum(r["predicted_memory_bytes"] for r in records if r["method"] == m)
        if mem("tinytrain"):
            print(f"TinyTrain's predicted backward memory is 1/{mem('fulltrain') / mem('tinytrain'):,.0f} of FullTrain's.")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline in minutes: pocket benchmark, shipped checkpoint, "
                                    "all methods, tables and plots",
                       description="Build (or reuse) the pocket benchmark, load the shipped mcunet-5fps checkpoint, "
                                   "run all methods on a few tasks of two pocket targets and print the accuracy "
                                   "and cost tables. Every `tinytrain eval` option can override the small defaults.")
    add_run_arguments(p, DEMO_DEFAULTS)
    p.set_defaults(func=run, resolution_fallback=64)
