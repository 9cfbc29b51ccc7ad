"""`tinytrain bench pool`: what a fixed pool of augmented views costs in accuracy, against fresh augmentation.

With `augment_pool` P the pseudo-queries are P augmented views of the support set drawn once (their prefix
outputs cached) instead of a new draw every iteration; this changes the training, so its effect is measured
here: TinyTrain on the same validation episodes (held-out validation classes, never test classes) with fresh
augmentation and with each pool size, same seed per episode; reported as mean query accuracy and the paired
difference to fresh augmentation with its 95 % interval.

The library side: `measure_pool(PoolSettings(...))` returns a `PoolResult` (`.to_dict()` is the command's
`--json` object, `.table()` its text); the command line is `tinytrain.cli.bench_pool`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .stats import mean_ci
from ..errors import BadInput


@dataclass(frozen=True)
class PoolSettings:
    """What `measure_pool` runs (the flags of `tinytrain bench pool`, same defaults)."""
    model: str = "mcunet-5fps"
    checkpoint: str = "pocket"
    domain: str | None = None           # a domain with a 'val' split, or a class-per-folder path (all its
                                        # classes count as validation classes); None: the pocket source
    resolution: int | None = None       # None: the checkpoint's
    pools: tuple[int, ...] = (1, 4, 8)  # pool sizes compared with fresh augmentation
    episodes: int = 60
    ways: int = 5
    shots: int = 5
    queries: int = 10
    iterations: int = 40
    lr: float = 1e-3
    threads: int = 1
    seed: int = 0


@dataclass
class PoolResult:
    """Mean query accuracy per row ("fresh", "pool P"): `rows[label]` has accuracy, ci95 and, beside fresh
    augmentation, the paired difference to it (minus_fresh, minus_fresh_ci95; None for "fresh")."""
    model: str
    checkpoint: str
    domain: str                 # as given (or the pocket source)
    split: str                  # "val", or "all" for a class-per-folder path
    resolution: int
    episodes: int
    ways: int
    shots: int
    queries: int
    iterations: int
    lr: float
    seconds: float
    rows: dict[str, dict]

    def to_dict(self) -> dict:
        """The `--json` object."""
        return {"model": self.model, "checkpoint": self.checkpoint, "domain": f"{self.domain} ({self.split})",
                "resolution": self.resolution, "episodes": self.episodes, "ways": self.ways, "shots": self.shots,
                "queries": self.queries, "iterations": self.iterations, "lr": self.lr, "seconds": self.seconds,
                "rows": self.rows}

    def table(self) -> str:
        lines = [f"TinyTrain on {self.episodes} {self.ways}-way {self.shots}-shot validation episodes of {self.domain} "
                 f"({self.model}, {self.checkpoint}, {self.resolution} px, {self.iterations} iterations, lr {self.lr:g})",
                 f"{'pseudo-queries':<16}{'accuracy %':>16}{'minus fresh (points)':>24}"]
        for label, r in self.rows.items():
            diff = ("" if r["minus_fresh"] is None
                    else f"{100 * r['minus_fresh']:+.2f} ± {100 * r['minus_fresh_ci95']:.2f}")
            lines.append(f"{label:<16}{100 * r['accuracy']:>10.2f} ± {100 * r['ci95']:.2f}{diff:>24}")
        return "\n".join(lines)


def measure_pool(settings: PoolSettings = PoolSettings(),
                 progress: Callable[[str], None] | None = None) -> PoolResult:
    """TinyTrain on the same validation episodes with fresh augmentation and with each pool size. `progress`
    gets "episode i/n" after each episode (a counter: each message replaces the one before)."""
    import torch

    from ..methods import make_method
    from ..methods.base import AdaptConfig
    from ..data.sampler import EpisodeSampler, load_task
    from ..models.weights import load_backbone
    from .episodes import open_domain
    from .evalconfig import checkpoint_resolution

    s = settings
    pools = sorted(set(s.pools))
    if not pools or min(pools) < 1:
        raise BadInput("--pools: give pool sizes >= 1, e.g. 1,4,8 (fresh augmentation is always the reference)")
    if s.episodes < 2:
        raise BadInput("--episodes must be at least 2 (the interval needs two)")
    torch.set_num_threads(s.threads)
    if s.domain is None:
        from ..data.pocket import POCKET_SOURCE, ensure_pocket
        ensure_pocket()
        domain = POCKET_SOURCE
    else:
        domain = s.domain
    # a class-per-folder path has no splits: all its classes serve as validation classes (the user's choice)
    split = "all" if Path(domain).expanduser().is_dir() else "val"
    dataset = open_domain(domain, split)
    res = s.resolution or checkpoint_resolution(s.model, s.checkpoint)
    backbone = load_backbone(s.model, s.checkpoint)
    sampler = EpisodeSampler(dataset, mode="fixed", ways=s.ways, shots=s.shots, queries=s.queries, seed=s.seed)
    labels = ["fresh"] + [f"pool {p}" for p in pools]
    acc: dict[str, list[float]] = {k: [] for k in labels}
    t0 = time.perf_counter()
    for i in range(s.episodes):
        task = load_task(dataset, sampler.episode(i), res)
        for label, pool in zip(labels, [0] + pools):
            cfg = AdaptConfig(iterations=s.iterations, lr=s.lr, resolution=res, seed=s.seed * 100_003 + i,
                              options={"augment_pool": pool})
            torch.manual_seed(cfg.seed)
            head = backbone.checkpoint_info.head()
            pred = make_method("tinytrain", backbone, cfg, head).fit(task.support_x, task.support_y)
            acc[label].append(pred.accuracy(task.query_x, task.query_y))
        if progress:
            progress(f"episode {i + 1}/{s.episodes}")
    seconds = time.perf_counter() - t0
    rows = {}
    for label in labels:
        m = mean_ci(acc[label])
        d = mean_ci([a - b for a, b in zip(acc[label], acc["fresh"])])
        rows[label] = {"accuracy": m.mean, "ci95": m.ci95,
                       "minus_fresh": None if label == "fresh" else d.mean,
                       "minus_fresh_ci95": None if label == "fresh" else d.ci95}
    return PoolResult(model=s.model, checkpoint=s.checkpoint, domain=domain, split=split, resolution=res,
                      episodes=s.episodes, ways=s.ways, shots=s.shots, queries=s.queries, iterations=s.iterations,
                      lr=s.lr, seconds=seconds, rows=rows)
