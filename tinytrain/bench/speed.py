"""`tinytrain bench speed`: one task, side by side in one run — training-iteration wall time and measured
saved-for-backward bytes of FullTrain, SparseUpdate, TinyTrain and a masked TinyTrain reference (same
channels, dense model, full backward, gradients of other channels zeroed: how peers do it).

Every method runs the same P>M>F iteration (prototypes, augmented pseudo-query, Adam) on the same
images with the same micro-batch and the same pseudo-queries (`--augment-pool` views drawn once, or
fresh augmentation with 0), so the ratios isolate what the update scheme costs. The methods'
iterations are interleaved round-robin (`bench/timing.py`): each round runs one iteration of every
method, and the ratios are medians of per-round ratios, with their spread.

The library side: `measure_speed(SpeedSettings(...))` returns a `SpeedResult` (`.to_dict()` is the
command's `--json` object, `.table()` its text); the command line is `tinytrain.cli.bench_speed`.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

from .timing import format_ratio, pin_threads, ratio_spread, round_robin, spread
from ..errors import BadInput

if TYPE_CHECKING:       # torch and the methods are imported where they run: `bench speed --help` needs neither
    import torch

DEFAULT_POOL = 0      # fresh augmentation, as the methods train by default
METHODS = ("fulltrain", "sparseupdate", "tinytrain", "tinytrain-masked")


@dataclass(frozen=True)
class SpeedSettings:
    """What `measure_speed` runs (the flags of `tinytrain bench speed`, same defaults)."""
    model: str = "mcunet-5fps"
    resolution: int = 128
    ways: int = 5
    shots: int = 5
    batch_size: int | None = None       # micro-batch of every method; None: the whole support set
    iterations: int = 10                # timed rounds, one iteration of every method each, after a warm-up round
    threads: int = 1                    # torch threads, pinned to as many CPUs
    augment_pool: int = DEFAULT_POOL    # pseudo-queries from this many views drawn once; 0: fresh augmentation
    cache_budget: str = "none"          # memory the support cache and the pool may hold, e.g. "4MB"
    profile: str | None = None          # one of METHODS: torch.profiler over 10 more iterations of it
    seed: int = 0


@dataclass
class SpeedResult:
    """What `measure_speed` measured. `methods[name]`: seconds_per_iteration, spread, setup_seconds,
    measured_saved_bytes, predicted_saved_bytes (None for the dense ones); `ratios`: per-round time ratios
    (spread dicts) and saved-bytes ratios (floats)."""
    model: str
    resolution: int
    support: int
    batch_size: int
    rounds: int
    augment_pool: int
    caches: dict
    threads: int
    cpus: list[int] | None
    load_average: list[float] | None
    tinytrain_plan: list[dict]
    methods: dict[str, dict]
    ratios: dict[str, dict | float]
    profiled: str | None = None         # the method profiled, if any
    profile: str | None = None          # torch.profiler's table of it

    def to_dict(self) -> dict:
        """The `--json` object."""
        out = {"model": self.model, "resolution": self.resolution, "support": self.support,
               "batch_size": self.batch_size, "rounds": self.rounds, "augment_pool": self.augment_pool,
               "caches": self.caches, "threads": self.threads, "cpus": self.cpus, "load_average": self.load_average,
               "tinytrain_plan": self.tinytrain_plan, "methods": self.methods, "ratios": self.ratios}
        if self.profiled:
            out["profile"] = self.profile
        return out

    def table(self) -> str:
        """The text report: settings, one row per method, the ratios (and the profile, if any)."""
        pool = f"a pool of {self.augment_pool} augmented views" if self.augment_pool else "fresh augmentation"
        lines = [f"{self.model} @ {self.resolution}px, support {self.support}, micro-batch {self.batch_size}, {pool}, "
                 f"{self.threads} thread(s) pinned, load average {self.load_average}; {self.rounds} round-robin "
                 f"rounds after a warm-up",
                 f"{'method':<18}{'s/iter':>9}{'(IQR)':>17}{'set-up s':>10}{'saved bytes':>14}{'predicted':>12}"]
        for name, r in self.methods.items():
            pred = "" if r["predicted_saved_bytes"] is None else str(r["predicted_saved_bytes"])
            iqr = f"{r['spread']['q1']:.4f}-{r['spread']['q3']:.4f}"
            lines.append(f"{name:<18}{r['seconds_per_iteration']:>9.4f}{iqr:>17}{r['setup_seconds']:>10.3f}"
                         f"{r['measured_saved_bytes']:>14}{pred:>12}")
        for k, v in self.ratios.items():
            lines.append(f"{k}: {format_ratio(v) if isinstance(v, dict) else f'{v:.2f}x'}")
        if self.profiled:
            lines.append(f"torch.profiler, 10 iterations of {self.profiled}:\n{self.profile}")
        return "\n".join(lines)


def profile_steps(step, iterations: int = 10, rows: int = 15) -> str:
    """torch.profiler's table (by self CPU time) of `iterations` calls of `step`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iterations):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


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


def loop_options(augment_pool: int, cache_budget: str) -> dict:
    """AdaptConfig options for the benches' loop settings."""
    if augment_pool < 0:
        raise BadInput(f"--augment-pool must be >= 0 (got {augment_pool}); 0 = fresh augmentation")
    return {"augment_pool": augment_pool, "cache_budget": cache_budget}


def measure_speed(settings: SpeedSettings = SpeedSettings()) -> SpeedResult:
    """Time one training iteration of every method in round-robin rounds and measure its saved bytes."""
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
    s = settings
    if s.iterations < 1:
        raise BadInput("--iterations must be at least 1 (one warm-up round runs before the timed ones)")
    if s.batch_size is not None and s.batch_size < 1:
        raise BadInput(f"--batch-size must be at least 1 (got {s.batch_size}); leave it out for the whole support set")
    if s.profile is not None and s.profile not in METHODS:
        raise BadInput(f"--profile must be one of {', '.join(METHODS)} (got {s.profile!r})")
    pinned = pin_threads(s.threads)
    torch.manual_seed(s.seed)
    backbone = build_backbone(s.model)
    x, y = check_support(*synthetic_task(s.ways, s.shots, s.resolution, s.seed))
    batch = s.batch_size or len(x)
    options = loop_options(s.augment_pool, s.cache_budget)
    cfg = AdaptConfig(iterations=s.iterations + 1, lr=1e-3, batch_size=batch, seed=s.seed,
                      resolution=s.resolution, options=options)
    tt = TinyTrainMethod(backbone, cfg)
    tt_built = tt._build(x, y)
    su_built = SparseUpdateMethod(backbone, cfg)._build(x, y)
    ft_built = FullTrainMethod(backbone, cfg)._build(x, y)
    ref = MaskedReference(private_copy(backbone), tt_built.engine_plan)
    models = {"fulltrain": (ft_built.model, None), "sparseupdate": (su_built.model, None),
              "tinytrain": (tt_built.model, None), "tinytrain-masked": (ref, ref.mask_gradients)}
    budget = tt.cache_budget
    tuners = {name: FineTuner(model, x, y, tt.head, cfg, 1e-3, batch, exclude_storages=storages_of(model),
                              before_step=before, cache_budget=budget, augment_pool=s.augment_pool)
              for name, (model, before) in models.items()}
    times = round_robin({name: t.step for name, t in tuners.items()}, rounds=s.iterations, warmup=1)
    spec, res, nb = backbone.spec, s.resolution, min(batch, len(x))
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
    return SpeedResult(
        model=s.model, resolution=res, support=len(x), batch_size=batch, rounds=s.iterations,
        augment_pool=s.augment_pool, caches=tuners["tinytrain"].caches.to_dict(), threads=pinned["threads"],
        cpus=pinned["cpus"], load_average=pinned["load_average"],
        tinytrain_plan=[r.to_dict() for r in plan_rows(spec, tt_built.update_plan, tt_built.scores)],
        methods=results, ratios=ratios, profiled=s.profile,
        profile=profile_steps(tuners[s.profile].step) if s.profile else None)
