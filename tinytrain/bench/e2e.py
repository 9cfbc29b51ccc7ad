"""`tinytrain bench e2e`: one whole adaptation per method on the same task, side by side in one run,
timed phase by phase — the paper's Table 9 / Fig. 5a view (there: Pi Zero 2, 40 iterations, 25 images).

Phases of one adaptation (`report.extra["phases"]`, filled by `TrainedMethod.fit`):
  load        reading the checkpoint into a backbone (every adaptation starts from the file)
  prefix      the clean support set's frozen-prefix output, computed once per task (engine methods)
  fisher      TinyTrain's Fisher pass over the support set (on the cached prefix)
  selection   deciding what to train: TinyTrain's budgeted layer/channel choice; the baselines' fixed
              plans (building the model to train)
  training    the fine-tuning iterations (with `--augment-pool`, drawing the pool first)
  prototypes  the final class prototypes with the adapted weights

Methods run round-robin (`bench/timing.py`): each round adapts every method once, in a rotating
order; phase times are medians over rounds, ratios are medians of per-round ratios with their
spread. Peak memory: the process's peak resident memory during each adaptation (the kernel's
high-water mark, reset before it), and its growth over the memory held just before.
"""
from __future__ import annotations

import ctypes
import gc
import json
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

from .memory import _reset_peak, _rss, _status_kib
from .speed import add_timing_arguments, loop_options, synthetic_task
from .timing import format_ratio, pin_threads, ratio_spread, round_robin, spread
from ..errors import BadInput

if TYPE_CHECKING:       # torch and the methods are imported where they run: `bench e2e --help` needs neither
    import torch

    from ..methods.base import AdaptConfig

PHASES = ("load", "prefix", "fisher", "selection", "training", "prototypes")
SELECTION_PHASES = ("fisher", "selection")
DEFAULT_METHODS = ("fulltrain", "sparseupdate", "tinytrain")


def add_arguments(p) -> None:
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


def _loader(model: str, checkpoint: str, seed: int = 0):
    """A function loading the backbone, and a note if the model has no such shipped checkpoint (then a
    random initialisation, the same one for every adaptation)."""
    from ..models.weights import load_backbone

    shipped_name = "/" not in checkpoint and not checkpoint.endswith((".safetensors", ".pth"))
    try:
        load_backbone(model, checkpoint)
    except FileNotFoundError:
        if not shipped_name:
            raise
        note = (f"{model} has no shipped checkpoint {checkpoint!r}: every method adapts a random initialisation "
                f"(the times are those of the architecture; the accuracy would not be)")
        def random_init():
            import torch
            torch.manual_seed(seed)
            return load_backbone(model, "random")
        return random_init, "random", note
    return (lambda: load_backbone(model, checkpoint)), checkpoint, None


def _config(name: str, args, batch: int) -> AdaptConfig:
    from ..methods.base import AdaptConfig
    options = loop_options(args)
    if name == "tinytrain":
        options["fisher_batch_size"] = batch
    return AdaptConfig(iterations=args.iterations, lr=1e-3, batch_size=batch, seed=args.seed,
                       resolution=args.resolution, options=options)


def _release_free_memory() -> None:
    """Hand memory freed by earlier adaptations back to the OS (glibc), so that one method's peak is
    not hidden in memory another left behind; a no-op where malloc_trim does not exist."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def adapt_once(name: str, load, x: torch.Tensor, y: torch.Tensor, config: AdaptConfig) -> dict:
    """One adaptation from the checkpoint file: phase seconds, peak RSS and its growth."""
    from ..methods import make_method
    gc.collect()
    _release_free_memory()
    before = _rss()
    exact_peak = _reset_peak()
    t0 = time.perf_counter()
    backbone = load()
    load_seconds = time.perf_counter() - t0
    method = make_method(name, backbone, config)
    method.fit(x, y)
    peak = _status_kib("VmHWM") * 1024 if exact_peak else None
    phases = {"load": load_seconds} | {k: float(v) for k, v in method.report.extra["phases"].items()}
    return {"phases": phases, "total_seconds": sum(phases.values()), "peak_rss_bytes": peak,
            "growth_bytes": None if peak is None else peak - before}


def run(args) -> int:
    from ..methods import METHODS, make_method
    from ..methods.common import check_support
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS or m == "none"]
    if bad:
        raise BadInput(f"--methods: {', '.join(bad)} cannot be timed; choose from "
                         f"{', '.join(m for m in METHODS if m != 'none')}")
    if "tinytrain" not in methods:
        raise BadInput("--methods must include tinytrain (the ratios and the selection share are TinyTrain's)")
    if args.rounds < 1 or args.iterations < 1:
        raise BadInput("--rounds and --iterations must be at least 1")
    pinned = pin_threads(args.threads)
    load, checkpoint, note = _loader(args.model, args.checkpoint, args.seed)
    if note and not args.json:
        print(f"note: {note}", file=sys.stderr)
    x, y = check_support(*synthetic_task(args.ways, args.shots, args.resolution, args.seed))
    batch = args.batch_size or len(x)
    configs = {m: _config(m, args, batch) for m in methods}
    # the real settings first, as dry runs (a pool that does not fit the cache budget is refused here);
    # then a warm-up: PyTorch's one-off costs (lazy imports, first optimizer step) are not an adaptation's
    for m in methods:
        make_method(m, load(), configs[m]).plan(x, y)
    for m in methods:
        warm = _config(m, args, batch)
        warm.iterations = 1
        adapt_once(m, load, x, y, warm)
    records: dict[str, list[dict]] = {m: [] for m in methods}
    round_robin({m: (lambda m=m: records[m].append(adapt_once(m, load, x, y, configs[m]))) for m in methods},
                rounds=args.rounds, warmup=0)
    totals = {m: [r["total_seconds"] for r in records[m]] for m in methods}
    out_methods = {}
    for m in methods:
        rs = records[m]
        peaks = [r["peak_rss_bytes"] for r in rs if r["peak_rss_bytes"] is not None]
        growth = [r["growth_bytes"] for r in rs if r["growth_bytes"] is not None]
        entry = {"phases": {k: spread([r["phases"].get(k, 0.0) for r in rs])["median"] for k in PHASES},
                 "total_seconds": spread(totals[m])["median"], "total_spread": spread(totals[m]),
                 "peak_rss_bytes": max(peaks) if peaks else None, "growth_bytes": max(growth) if growth else None,
                 "rounds": rs}
        if m == "tinytrain":
            entry["selection_share"] = spread([sum(r["phases"][k] for k in SELECTION_PHASES) / r["total_seconds"]
                                               for r in rs])["median"]
            entry["selection_share_spread"] = spread([sum(r["phases"][k] for k in SELECTION_PHASES) / r["total_seconds"]
                                                      for r in rs])
        out_methods[m] = entry
    ratios = {f"{m}_over_tinytrain_total": ratio_spread(totals[m], totals["tinytrain"])
              for m in methods if m != "tinytrain"}
    out = {"model": args.model, "checkpoint": checkpoint, "checkpoint_note": note, "resolution": args.resolution,
           "support": len(x), "batch_size": batch, "iterations": args.iterations, "rounds": args.rounds,
           "augment_pool": args.augment_pool, **pinned, "methods": out_methods, "ratios": ratios}
    if args.plot:
        out["plot"] = str(plot_phases(out_methods, args.plot, f"{args.model} @ {args.resolution} px, "
                                                               f"{len(x)} images, {args.iterations} iterations"))
    if args.json:
        print(json.dumps(out))
    else:
        print(format_table(out))
    return 0


def format_table(out: dict) -> str:
    from ..costs.units import format_bytes

    pool = f"a pool of {out['augment_pool']} augmented views" if out["augment_pool"] else "fresh augmentation"
    lines = [f"{out['model']} @ {out['resolution']} px ({out['checkpoint']}), {out['support']} support images, "
             f"{out['iterations']} iterations, micro-batch {out['batch_size']}, {pool}; {out['threads']} thread(s) "
             f"pinned, load average {out['load_average']}; medians of {out['rounds']} round-robin rounds (seconds)"]
    head = (f"{'method':<14}" + "".join(f"{k:>11}" for k in PHASES)
            + f"{'total':>9}{'ratio':>8}{'peak RSS':>11}{'growth':>11}")
    lines.append(head)
    t_tt = out["methods"]["tinytrain"]["total_seconds"]
    for m, e in out["methods"].items():
        peak = format_bytes(e["peak_rss_bytes"]) if e["peak_rss_bytes"] is not None else "-"
        growth = format_bytes(e["growth_bytes"]) if e["growth_bytes"] is not None else "-"
        lines.append(f"{m:<14}" + "".join(f"{e['phases'][k]:>11.3f}" for k in PHASES)
                     + f"{e['total_seconds']:>9.2f}{e['total_seconds'] / t_tt:>7.2f}x{peak:>11}{growth:>11}")
    tt = out["methods"]["tinytrain"]
    s = tt["selection_share_spread"]
    lines.append(f"TinyTrain's selection (Fisher pass + choice): {100 * tt['selection_share']:.1f} % of its end-to-end "
                 f"time (range {100 * s['min']:.1f}-{100 * s['max']:.1f} %; the paper: 3.4-3.8 %)")
    for k, r in out["ratios"].items():
        lines.append(f"{k}: {format_ratio(r)}")
    if out.get("checkpoint_note"):
        lines.append(f"note: {out['checkpoint_note']}")
    if out.get("plot"):
        lines.append(f"plot: {out['plot']}")
    return "\n".join(lines)


def plot_phases(methods: dict, path: str | Path, title: str) -> Path:
    """Stacked bars: one per method, one segment per phase (median seconds)."""
    from matplotlib.figure import Figure

    from .plots import _save

    names = list(methods)
    fig = Figure(figsize=(1.6 + 1.3 * len(names), 4.2))
    ax = fig.add_subplot()
    bottom = [0.0] * len(names)
    for k in PHASES:
        vals = [methods[m]["phases"][k] for m in names]
        ax.bar(names, vals, bottom=bottom, label=k)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("seconds (median over rounds)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
