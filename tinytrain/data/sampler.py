"""Episode sampling as Meta-Dataset samples test episodes, a fixed N-way K-shot mode, and episode files.

Meta-Dataset (Triantafillou et al. 2020, `sampling.py`; paper_spec.md section 8):
  ways ~ U{5, min(50, #classes)}; query per class q = min(10, min_c floor(n_c / 2));
  beta ~ U(0, 1), support size S = min(500, sum_c floor(beta * min(100, n_c - q) + 1));
  w_c = n_c * exp(u_c), u_c ~ U(log 0.5, log 2); shots_c = min(floor(w_c / sum w * (S - ways)) + 1, n_c - q).
Meta-Dataset's code caps each class's *contribution to S* at 100 but not the shots themselves, so a large,
heavily weighted class can get more than 100; `cap_shots=True` (default) also clips shots at `max_per_class`
so that "at most 100 per class" holds; `cap_shots=False` reproduces Meta-Dataset exactly.
Datasets with `groups` (Omniglot alphabets) use hierarchy-aware sampling: one group is drawn uniformly
among those with at least `min_ways` classes, and the episode's classes come from that group only.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .datasets import ImageDataset
from .episodes import MODES
from .transforms import eval_transform
from .types import Episode, Task, load_episodes, save_episodes
from ..errors import BadInput


class EpisodeSampler:
    """Deterministic episodes: `episode(i)` depends only on (seed, i), so any subset can be regenerated."""

    def __init__(self, dataset: ImageDataset, mode: str = "metadataset", ways: int | None = None,
                 shots: int | None = None, queries: int | None = None, seed: int = 0, max_ways: int = 50,
                 max_support: int = 500, max_per_class: int = 100, min_ways: int = 5,
                 max_queries: int = 10, use_groups: bool = True, cap_shots: bool = True):
        if mode not in MODES:
            raise BadInput(f"unknown sampling mode {mode!r}; use one of {', '.join(MODES)}")
        self.dataset, self.mode, self.seed, self.cap_shots = dataset, mode, int(seed), cap_shots
        self.sizes = np.asarray(dataset.class_sizes(), dtype=np.int64)
        names = dataset.classes
        n = len(self.sizes)
        if mode == "fixed":
            for label, v in (("ways", ways), ("shots", shots), ("queries", queries)):
                if v is None or int(v) < (0 if label == "queries" else 1):
                    raise BadInput(f"fixed mode needs --{label} as a positive integer, got {v!r}")
            self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
            need = self.shots + self.queries
            self.eligible = np.flatnonzero(self.sizes >= need)
            if self.ways > n:
                raise BadInput(f"{self.ways}-way episodes need {self.ways} classes but {dataset.name} has {n}; "
                                 f"lower --ways to at most {n}")
            if len(self.eligible) < self.ways:
                small = np.flatnonzero(self.sizes < need)
                shown = ", ".join(f"{names[c]!r} ({self.sizes[c]})" for c in small[:5]) + (" ..." if len(small) > 5 else "")
                have = (f"only {len(self.eligible)} of its {n} classes have" if len(self.eligible)
                        else f"none of its {n} classes has")
                raise BadInput(f"{self.ways}-way episodes with --shots {self.shots} + --queries {self.queries} need "
                                 f"{self.ways} classes with at least {need} images each, but {have} that many "
                                 f"(fewer: {shown}); lower --ways, --shots or --queries, or add images")
            self.groups = None
            return
        if min_ways < 1 or max_ways < min_ways:
            raise BadInput(f"need 1 <= min_ways <= max_ways, got {min_ways}, {max_ways}")
        if max_support < 1 or max_per_class < 1 or max_queries < 1:
            raise BadInput("max_support, max_per_class and max_queries must be positive")
        self.min_ways, self.max_ways = min_ways, max_ways
        self.max_support, self.max_per_class, self.max_queries = max_support, max_per_class, max_queries
        too_small = np.flatnonzero(self.sizes < 2)
        if len(too_small):
            shown = ", ".join(f"{names[c]!r} ({self.sizes[c]})" for c in too_small[:5])
            raise BadInput(f"Meta-Dataset episodes need at least 2 images per class (1 support + 1 query); "
                             f"{dataset.name} has {len(too_small)} smaller: {shown}; add images or remove them")
        self.groups = None
        if use_groups and dataset.groups is not None:
            members: dict[int, list[int]] = {}
            for c, g in enumerate(dataset.groups):
                members.setdefault(int(g), []).append(c)
            self.groups = [np.asarray(v) for _, v in sorted(members.items()) if len(v) >= min_ways]
            if not self.groups:
                raise BadInput(f"no group of {dataset.name} has {min_ways} classes; sample without groups")
        elif n < 2:
            raise BadInput(f"dataset {dataset.name!r} has a single class ({names[0]!r}); few-shot episodes need at "
                             "least two classes: add a folder per class")
        elif n < min_ways:
            raise BadInput(f"{dataset.name} has {n} classes but Meta-Dataset episodes need at least {min_ways}; "
                             f"use --mode fixed with --ways {n} (or fewer), or add classes")

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(i)])

    def episode(self, i: int) -> Episode:
        rng = self._rng(i)
        if self.mode == "fixed":
            classes = rng.choice(self.eligible, self.ways, replace=False)
            shots = np.full(self.ways, self.shots)
            q = self.queries
        else:
            pool = self.groups[int(rng.integers(len(self.groups)))] if self.groups else np.arange(len(self.sizes))
            ways = int(rng.integers(self.min_ways, min(self.max_ways, len(pool)) + 1))
            classes = rng.choice(pool, ways, replace=False)
            n_c = self.sizes[classes]
            q = int(min(self.max_queries, int((n_c // 2).min())))
            remaining = n_c - q
            beta = rng.uniform()
            support = int(min(self.max_support,
                              np.floor(beta * np.minimum(self.max_per_class, remaining) + 1).sum()))
            weights = n_c * np.exp(rng.uniform(math.log(0.5), math.log(2.0), size=ways))
            shots = np.minimum(np.floor(weights / weights.sum() * (support - ways)).astype(np.int64) + 1, remaining)
            if self.cap_shots:  # Meta-Dataset caps only each class's contribution to S; we also cap shots
                shots = np.minimum(shots, self.max_per_class)
        sup, qry = [], []
        for label, (c, k) in enumerate(zip(classes, shots)):
            perm = rng.permutation(int(self.sizes[c]))
            sup += [(label, int(j)) for j in perm[:k]]
            qry += [(label, int(j)) for j in perm[k:k + q]]
        return Episode([int(c) for c in classes], sup, qry, seed=self.seed * 1_000_003 + int(i))

    def sample(self, n: int, start: int = 0) -> list[Episode]:
        if n < 1:
            raise BadInput(f"number of episodes must be >= 1, got {n}")
        return [self.episode(i) for i in range(start, start + n)]


def load_task(dataset: ImageDataset, episode: Episode, resolution: int) -> Task:
    """Tensors of one episode with the evaluation transform (float32, ImageNet-normalised)."""
    tf = eval_transform(resolution)

    def stack(pairs: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        if not pairs:
            return torch.empty(0, 3, resolution, resolution), torch.empty(0, dtype=torch.long)
        x = torch.stack([tf(dataset.load(episode.classes[label], j)) for label, j in pairs])
        return x, torch.tensor([label for label, _ in pairs], dtype=torch.long)

    sx, sy = stack(episode.support)
    qx, qy = stack(episode.query)
    return Task(sx, sy, qx, qy, [dataset.classes[c] for c in episode.classes])


def episode_stats(episodes: Sequence[Episode]) -> dict:
    """Table-5 style statistics: mean and SD over episodes of ways, support size, query size, and the
    per-episode mean of support shots and query shots per class."""
    if not episodes:
        raise BadInput("no episodes to summarise")
    ways = np.array([e.ways for e in episodes], dtype=float)
    sup = np.array([len(e.support) for e in episodes], dtype=float)
    qry = np.array([len(e.query) for e in episodes], dtype=float)
    shots = np.array([np.mean(e.shots()) for e in episodes], dtype=float)
    qshots = qry / ways
    out = {"n_episodes": len(episodes)}
    for key, v in (("ways", ways), ("support", sup), ("query", qry), ("shots", shots), ("query_shots", qshots)):
        out[f"{key}_mean"] = float(v.mean())
        out[f"{key}_sd"] = float(v.std())
        out[f"{key}_min"] = float(v.min())
        out[f"{key}_max"] = float(v.max())
    out["min_shots"] = int(min(min(e.shots()) for e in episodes))
    return out


def save_episode_file(path: str | Path, dataset: ImageDataset, episodes: list[Episode], **meta) -> None:
    """Save episodes with the dataset's name and class list, so a later load can check they match."""
    save_episodes(path, episodes, {"dataset": dataset.name, "classes": list(dataset.classes), **meta})


def load_episode_file(path: str | Path, dataset: ImageDataset | None = None) -> tuple[list[Episode], dict]:
    """Load episodes; with `dataset`, fail clearly if they were sampled from a different class list."""
    episodes, meta = load_episodes(path)
    if dataset is not None and meta.get("classes") is not None and list(meta["classes"]) != list(dataset.classes):
        raise BadInput(f"{path} was sampled from {meta.get('dataset')!r} with {len(meta['classes'])} classes, "
                         f"which does not match {dataset.name!r} ({len(dataset.classes)} classes); "
                         "resample the episodes for this dataset")
    if dataset is not None:
        check_episode_indices(path, episodes, dataset)
    return episodes, meta


def check_episode_indices(path: str | Path, episodes: list[Episode], dataset: ImageDataset) -> None:
    """Every class and image an episode names exists in `dataset` (an edited or foreign file: one BadInput)."""
    sizes = dataset.class_sizes()
    for i, e in enumerate(episodes):
        if max(e.classes) >= len(sizes):
            raise BadInput(f"{path}: episode {i} names class {max(e.classes)}, but {dataset.name!r} has "
                           f"{len(sizes)} classes; resample the episodes")
        for label, j in e.support + e.query:
            if j >= sizes[e.classes[label]]:
                raise BadInput(f"{path} refers to image {j} of class {dataset.classes[e.classes[label]]!r}, "
                               "which has fewer images; resample the episodes")
