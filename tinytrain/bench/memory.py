"""`tinytrain bench memory`: peak resident memory of one adaptation per method, each in a fresh process.

Why child processes: a process's peak RSS never goes down, so methods measured one after another in
one process would hide each other. Each child (``python -m tinytrain.bench.memory CONFIG_JSON``):

1. imports torch and tinytrain            -> ``import_rss_bytes`` (PyTorch's own cost, shown apart)
2. builds the backbone, the support set and the method, and warms the runtime up (one Adam step and
   one conv backward on a 3-element dummy: PyTorch's first optimizer step imports torch._dynamo,
   about 76 MB, a one-off import cost, not a cost of adapting)  -> ``loaded_rss_bytes``
3. resets the kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5; Linux >= 4.0), runs ``fit``
4. reads VmHWM                             -> ``peak_rss_bytes``; ``growth_bytes`` = peak - loaded

`growth_bytes` is what the adaptation itself costs in RAM; it sits beside the analytic prediction
(paper Table 2 accounting) of the same plan. Where clear_refs is not writable the child samples RSS
from a thread every millisecond instead (``peak_source`` says which was used).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import BadInput

DEFAULT_METHODS = ("none", "lastlayer", "sparseupdate", "tinytrain", "tinytl", "fulltrain")
PAPER_BATCH = {"fulltrain": 100, "tinytl": 100}     # others: 1 (paper 3.2)


@dataclass(frozen=True)
class MemorySettings:
    """What `measure_memory` runs (the flags of `tinytrain bench memory`, same defaults)."""
    model: str = "mcunet-5fps"
    resolution: int = 128
    methods: tuple[str, ...] = DEFAULT_METHODS
    ways: int = 5
    shots: int = 20                 # support images per class (5 x 20 = one batch of 100)
    iterations: int = 3             # fine-tuning iterations per method (the peak is reached in the first)
    memory_budget: str = "1MB"      # TinyTrain's budgets
    compute_budget: str = "15%"
    threads: int = 1                # torch threads per child
    timeout: float = 600            # seconds allowed per child


@dataclass
class MemoryResult:
    """Peak RSS per method. `methods[name]` is one child's figures (`measure_in_this_process`)."""
    model: str
    resolution: int
    support_images: int
    iterations: int
    threads: int
    methods: dict[str, dict]
    fulltrain_over_tinytrain_growth: float | None = None

    def to_dict(self) -> dict:
        """The `--json` object."""
        out = {"model": self.model, "resolution": self.resolution, "support_images": self.support_images,
               "iterations": self.iterations, "threads": self.threads, "methods": self.methods}
        if self.fulltrain_over_tinytrain_growth is not None:
            out["fulltrain_over_tinytrain_growth"] = self.fulltrain_over_tinytrain_growth
        return out

    def table(self) -> str:
        return format_table(self.to_dict())


# --- the child --------------------------------------------------------------------------------

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    if not m:
        raise RuntimeError(f"/proc/self/status has no {field}; peak memory needs Linux")
    return int(m.group(1))


def _rss() -> int:
    return _status_kib("VmRSS") * 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Sampler(threading.Thread):
    """Fallback peak tracker: polls RSS (misses spikes shorter than the interval)."""

    def __init__(self, interval: float = 0.001):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop = interval, _rss(), threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self.join()
        return max(self.peak, _rss())


def _warm_up(torch) -> None:
    """Pay PyTorch's lazy one-off costs (optimizer machinery, autograd engine) on a tiny dummy."""
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.ones(3)
    torch.optim.Adam([p]).step()
    torch.optim.SGD([p], lr=0.1).step()
    conv = torch.nn.Conv2d(3, 4, 3)
    conv(torch.randn(1, 3, 8, 8)).relu().sum().backward()


def measure_in_this_process(cfg: dict) -> dict:
    """Run one adaptation as configured and return its memory figures (the child's work)."""
    import torch

    from ..costs.units import parse_bytes, parse_compute_budget
    from ..methods import make_method
    from ..methods.base import AdaptConfig
    from ..models.backbone import build_backbone

    torch.set_num_threads(int(cfg["threads"]))
    import_rss = _rss()
    torch.manual_seed(0)
    method_name, res = cfg["method"], int(cfg["resolution"])
    backbone = build_backbone(cfg["model"]).eval()
    n = cfg["ways"] * cfg["shots"]
    x = torch.randn(n, 3, res, res)
    y = torch.arange(cfg["ways"]).repeat_interleave(cfg["shots"])
    config = AdaptConfig(iterations=int(cfg["iterations"]), lr=1e-3, resolution=res,
                         batch_size=PAPER_BATCH.get(method_name, 1),
                         memory_budget=parse_bytes(cfg["memory_budget"]),
                         compute_budget=parse_compute_budget(cfg["compute_budget"]))
    if method_name != "tinytrain":
        config.memory_budget = config.compute_budget = None
    # the no-grad passes (prototypes, frozen prefix) run at the training batch, as on a device
    config.options["prefix_batch_size"] = config.batch_size
    method = make_method(method_name, backbone, config)
    _warm_up(torch)
    loaded = _rss()
    sampler = None
    if _reset_peak():
        source = "VmHWM after clear_refs"
    else:
        sampler, source = _Sampler(), "RSS sampled every 1 ms"
        sampler.start()
    t0 = time.perf_counter()
    method.fit(x, y)
    seconds = time.perf_counter() - t0
    peak = sampler.stop() if sampler else _status_kib("VmHWM") * 1024
    rep = method.report
    return {"method": method_name, "batch_size": config.batch_size, "import_rss_bytes": import_rss,
            "loaded_rss_bytes": loaded, "peak_rss_bytes": peak, "growth_bytes": peak - loaded,
            "predicted_memory_bytes": int(rep.predicted_memory_bytes),
            "measured_saved_bytes": rep.measured_saved_bytes, "backward_macs": int(rep.backward_macs),
            "seconds": seconds, "peak_source": source}


# --- the parent -------------------------------------------------------------------------------

def run_child(cfg: dict, timeout: float = 600) -> dict:
    """Measure one method in a fresh Python process; its last stdout line is the JSON result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), MKL_NUM_THREADS=str(cfg["threads"]))
    try:
        proc = subprocess.run([sys.executable, "-m", "tinytrain.bench.memory", json.dumps(cfg)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise BadInput(f"measuring {cfg['method']} took over {timeout:.0f} s; lower --resolution, "
                         "--shots or --iterations, or raise --timeout") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BadInput(f"measuring {cfg['method']} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_memory(settings: MemorySettings = MemorySettings(),
                   progress: Callable[[str], None] | None = None) -> MemoryResult:
    """Peak RSS per method, each in its own child process. `progress` gets a line before each method."""
    from ..models.specs import get_spec

    s = settings
    get_spec(s.model)
    unknown = [m for m in s.methods if m not in DEFAULT_METHODS]
    if unknown:
        raise BadInput(f"unknown method(s) {unknown}; choose from {', '.join(DEFAULT_METHODS)}")
    if s.ways < 2 or s.shots < 1:
        raise BadInput("--ways must be >= 2 and --shots >= 1")
    if s.iterations < 1:
        raise BadInput("--iterations must be >= 1 (the peak is reached during training)")
    rows = {}
    for m in s.methods:
        cfg = {"model": s.model, "method": m, "resolution": s.resolution, "ways": s.ways, "shots": s.shots,
               "iterations": s.iterations, "memory_budget": s.memory_budget, "compute_budget": s.compute_budget,
               "threads": s.threads}
        if progress:
            progress(f"measuring {m} ...")
        rows[m] = run_child(cfg, s.timeout)
    ratio = None
    if "tinytrain" in rows and "fulltrain" in rows and rows["tinytrain"]["growth_bytes"] > 0:
        ratio = rows["fulltrain"]["growth_bytes"] / rows["tinytrain"]["growth_bytes"]
    return MemoryResult(model=s.model, resolution=s.resolution, support_images=s.ways * s.shots,
                        iterations=s.iterations, threads=s.threads, methods=rows, fulltrain_over_tinytrain_growth=ratio)


def format_table(result: dict) -> str:
    """The text report of a `MemoryResult.to_dict()`."""
    from ..costs.units import format_bytes

    lines = [f"{result['model']} at {result['resolution']} px, {result['support_images']} support images, "
             f"{result['iterations']} iterations, {result['threads']} thread(s); one fresh process per method",
             f"{'method':<13}{'batch':>6}{'import RSS':>12}{'loaded RSS':>12}{'peak RSS':>12}{'growth':>12}"
             f"{'predicted':>12}"]
    for m, r in result["methods"].items():
        lines.append(f"{m:<13}{r['batch_size']:>6}{format_bytes(r['import_rss_bytes']):>12}"
                     f"{format_bytes(r['loaded_rss_bytes']):>12}{format_bytes(r['peak_rss_bytes']):>12}"
                     f"{format_bytes(r['growth_bytes']):>12}{format_bytes(r['predicted_memory_bytes']):>12}")
    if "fulltrain_over_tinytrain_growth" in result:
        lines.append(f"FullTrain's growth is {result['fulltrain_over_tinytrain_growth']:.1f}x TinyTrain's")
    return "\n".join(lines)


if __name__ == "__main__":      # the child process: its reply to run_child is one JSON line on the pipe
    sys.stdout.write(json.dumps(measure_in_this_process(json.loads(sys.argv[1]))) + "\n")
