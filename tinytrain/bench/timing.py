"""Timing that survives a shared machine: the benches' round-robin helper.

Timing each method's runs back to back lets a change of load between methods move their ratio (on
a loaded machine one `bench speed` gave 1.15x and the next 3.24x for the same code). Here every round
runs each method once, in a rotating order, so a load change hits all methods of a round alike; the
ratio is taken per round and summarised by its median and spread over rounds. Threads are pinned:
a fixed torch thread count and, where the OS allows, the process bound to that many CPUs.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable
from ..errors import BadInput



def pin_threads(threads: int) -> dict:
    """Fix torch's intra-op threads to `threads`, inter-op to 1, and the CPU affinity to `threads` CPUs.
    Returns what was set (for the bench's output)."""
    import torch
    if threads < 1:
        raise BadInput(f"--threads must be at least 1 (got {threads})")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:        # only settable before the first parallel work; harmless if already set
        pass
    cpus = None
    if hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) >= threads:
            cpus = allowed[:threads]
            os.sched_setaffinity(0, cpus)
    return {"threads": torch.get_num_threads(), "cpus": cpus, "load_average": _load_average()}


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def round_robin(runs: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call every run once per round (round r starts at the r-th run, so no run is always first);
    the first `warmup` rounds are not timed. Returns wall seconds per timed round, per run."""
    if rounds < 1:
        raise BadInput(f"at least one timed round is needed (got {rounds})")
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            runs[name]()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def spread(values: list[float]) -> dict:
    """Median, quartiles and range of `values` (rounded for printing and JSON)."""
    v = sorted(values)
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {"median": statistics.median(v), "q1": q[0], "q3": q[2], "min": v[0], "max": v[-1], "rounds": len(v)}


def ratio_spread(numerator: list[float], denominator: list[float]) -> dict:
    """The per-round ratio numerator / denominator, summarised by `spread`."""
    if len(numerator) != len(denominator):
        raise BadInput("ratios need the same rounds for both runs")
    return spread([a / b for a, b in zip(numerator, denominator)])


def format_ratio(r: dict) -> str:
    """'4.62x (IQR 4.40-4.81, range 3.95-5.10, 10 rounds)'."""
    return (f"{r['median']:.2f}x (IQR {r['q1']:.2f}-{r['q3']:.2f}, range {r['min']:.2f}-{r['max']:.2f}, "
            f"{r['rounds']} rounds)")
