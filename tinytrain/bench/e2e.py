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

The library side: `measure_e2e(E2ESettings(...))` returns an `E2EResult` (`.to_dict()` is the command's
`--json` object, `.table()` its text); the command line is `tinytrain.cli.bench_e2e`.
"""
from __future__ import annotations

import ctypes
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .memory import _reset_peak, _rss, _status_kib
from .speed import DEFAULT_POOL, loop_options, synthetic_task
from .timing import format_ratio, pin_threads, ratio_spread, round_robin, spread
from ..errors import BadInput

if TYPE_CHECKING:       # torch and the methods are imported where they run: `bench e2e --help` needs neither
    import torch

    from ..methods.base import AdaptConfig

PHASES = ("load", "prefix", "fisher", "selection", "training", "prototypes")
SELECTION_PHASES = ("fisher", "selection")
DEFAULT_METHODS = ("fulltrain", "sparseupdate", "tinytrain")


@dataclass(frozen=True)
class E2ESettings:
    """What `measure_e2e` runs (the flags of `tinytrain bench e2e`, same defaults)."""
    model: str = "mcunet-5fps"
    checkpoint: str = "pocket"          # shipped name or path; a model without the shipped one runs from random init
    resolution: int = 128
    methods: tuple[str, ...] = DEFAULT_METHODS      # tinytrain is required
    ways: int = 5
    shots: int = 5                      # 25 images, as Table 9
    iterations: int = 40                # fine-tuning iterations, as the paper
    batch_size: int | None = None       # micro-batch of every pass, the Fisher pass included; None: the whole set
    rounds: int = 3                     # round-robin rounds, one adaptation per method each
    threads: int = 1
    augment_pool: int = DEFAULT_POOL
    cache_budget: str = "none"
    seed: int = 0
    plot: str | Path | None = None      # also write a stacked-bar plot of the phases to this PNG


@dataclass
class E2EResult:
    """What `measure_e2e` measured. `methods[name]`: median `phases` (seconds), total_seconds, total_spread,
    peak_rss_bytes, growth_bytes, the per-round records (`rounds`) and, for tinytrain, selection_share and
    its spread; `ratios`: per-round total-time ratios over TinyTrain."""
    model: str
    checkpoint: str
    checkpoint_note: str | None
    resolution: int
    support: int
    batch_size: int
    iterations: int
    rounds: int
    augment_pool: int
    threads: int
    cpus: list[int] | None
    load_average: list[float] | None
    methods: dict[str, dict]
    ratios: dict[str, dict]
    plot: str | None = None             # the PNG written, if any

    def to_dict(self) -> dict:
        """The `--json` object."""
        out = {"model": self.model, "checkpoint": self.checkpoint, "checkpoint_note": self.checkpoint_note,
               "resolution": self.resolution, "support": self.support, "batch_size": self.batch_size,
               "iterations": self.iterations, "rounds": self.rounds, "augment_pool": self.augment_pool,
               "threads": self.threads, "cpus": self.cpus, "load_average": self.load_average,
               "methods": self.methods, "ratios": self.ratios}
        if self.plot is not None:
            out["plot"] = self.plot
        return out

    def table(self) -> str:
        return format_table(self.to_dict())


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


def _config(name: str, settings: E2ESettings, batch: int) -> AdaptConfig:
    from ..methods.base import AdaptConfig
    options = loop_options(settings.augment_pool, settings.cache_budget)
    if name == "tinytrain":
        options["fisher_batch_size"] = batch
    return AdaptConfig(iterations=settings.iterations, lr=1e-3, batch_size=batch, seed=settings.seed,
                       resolution=settings.resolution, options=options)


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


def measure_e2e(settings: E2ESettings = E2ESettings(),
                progress: Callable[[str], None] | None = None) -> E2EResult:
    """Adapt every method from the checkpoint, round-robin, timing each phase. `progress` gets a note line
    when the model has no such shipped checkpoint (then every method adapts a random initialisation)."""
    from ..methods import METHODS, make_method
    from ..methods.common import check_support
    s = settings
    methods = list(s.methods)
    bad = [m for m in methods if m not in METHODS or m == "none"]
    if bad:
        raise BadInput(f"--methods: {', '.join(bad)} cannot be timed; choose from "
                         f"{', '.join(m for m in METHODS if m != 'none')}")
    if "tinytrain" not in methods:
        raise BadInput("--methods must include tinytrain (the ratios and the selection share are TinyTrain's)")
    if s.rounds < 1 or s.iterations < 1:
        raise BadInput("--rounds and --iterations must be at least 1")
    pinned = pin_threads(s.threads)
    load, checkpoint, note = _loader(s.model, s.checkpoint, s.seed)
    if note and progress:
        progress(f"note: {note}")
    x, y = check_support(*synthetic_task(s.ways, s.shots, s.resolution, s.seed))
    batch = s.batch_size or len(x)
    configs = {m: _config(m, s, batch) for m in methods}
    # the real settings first, as dry runs (a pool that does not fit the cache budget is refused here);
    # then a warm-up: PyTorch's one-off costs (lazy imports, first optimizer step) are not an adaptation's
    for m in methods:
        make_method(m, load(), configs[m]).plan(x, y)
    for m in methods:
        warm = _config(m, s, batch)
        warm.iterations = 1
        adapt_once(m, load, x, y, warm)
    records: dict[str, list[dict]] = {m: [] for m in methods}
    round_robin({m: (lambda m=m: records[m].append(adapt_once(m, load, x, y, configs[m]))) for m in methods},
                rounds=s.rounds, warmup=0)
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
    plot = None
    if s.plot:
        plot = str(plot_phases(out_methods, s.plot, f"{s.model} @ {s.resolution} px, "
                                                    f"{len(x)} images, {s.iterations} iterations"))
    return E2EResult(model=s.model, checkpoint=checkpoint, checkpoint_note=note, resolution=s.resolution,
                     support=len(x), batch_size=batch, iterations=s.iterations, rounds=s.rounds,
                     augment_pool=s.augment_pool, threads=pinned["threads"], cpus=pinned["cpus"],
                     load_average=pinned["load_average"], methods=out_methods, ratios=ratios, plot=plot)


def format_table(out: dict) -> str:
    """The text report of an `E2EResult.to_dict()`."""
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
