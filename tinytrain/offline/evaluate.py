"""None (no fine-tuning) few-shot accuracy: ProtoNet nearest-centroid with cosine similarity.

Used for validation during training and for checkpoint cards, where several backbones are scored on
the very same episodes (each task is loaded once and given to every backbone).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Iterable

import torch

from ..data.types import Task
from ..models.backbone import Backbone
from ..models.head import CosineClassifier, class_prototypes
from .episodes import EpisodeSource
from ..errors import BadInput


@dataclass
class AccuracySummary:
    """Mean accuracy over episodes with the 95 % confidence half-width 1.96 * std / sqrt(n)."""

    mean: float
    ci95: float
    n: int
    accs: list[float]

    def to_dict(self, with_accs: bool = False) -> dict:
        d = asdict(self)
        if not with_accs:
            d.pop("accs")
        return d

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.ci95:.2f} % (n={self.n})"


def summarize(accs: list[float]) -> AccuracySummary:
    n = len(accs)
    if n == 0:
        raise BadInput("no episodes to summarise; evaluate at least one episode")
    mean = sum(accs) / n
    var = sum((a - mean) ** 2 for a in accs) / (n - 1) if n > 1 else 0.0
    return AccuracySummary(mean, 1.96 * math.sqrt(var / n), n, list(accs))


def _features(backbone: Backbone, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    device = next(backbone.parameters()).device
    return torch.cat([backbone(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def none_accuracy(backbone: Backbone, task: Task) -> float:
    """Query accuracy of nearest-prototype classification (BN in eval mode, no training)."""
    backbone.eval()
    head = CosineClassifier()   # scale and bias do not change the arg-max
    protos = class_prototypes(_features(backbone, task.support_x), task.support_y.to(_device(backbone)))
    logits = head.to(protos.device)(_features(backbone, task.query_x), protos)
    return float((logits.argmax(-1).cpu() == task.query_y).float().mean())


@torch.no_grad()
def validate(backbone: Backbone, val: EpisodeSource, episodes: int) -> AccuracySummary:
    """None accuracy on the first `episodes` episodes of `val` (a training stage's validation); the
    backbone's train/eval mode is left as it was."""
    was_training = backbone.training
    accs = [none_accuracy(backbone, val.task(i)) for i in range(episodes)]
    backbone.train(was_training)
    return summarize(accs)


def _device(backbone: Backbone) -> torch.device:
    return next(backbone.parameters()).device


def evaluate_none(backbones: dict[str, Backbone], tasks: Iterable[Task],
                  progress: bool = False) -> dict[str, AccuracySummary]:
    """Score every backbone on the same tasks; returns name -> summary."""
    accs: dict[str, list[float]] = {name: [] for name in backbones}
    tasks = _progress(tasks, progress, "episodes")
    for task in tasks:
        for name, backbone in backbones.items():
            accs[name].append(none_accuracy(backbone, task))
    return {name: summarize(a) for name, a in accs.items()}


def _progress(it, enabled: bool, unit: str):
    if not enabled:
        return it
    from tqdm import tqdm
    return tqdm(it, unit=unit, leave=False)


def split_resolution(checkpoint: str) -> tuple[str, int | None]:
    """'pocket@64' -> ('pocket', 64); 'pocket' -> ('pocket', None)."""
    name, sep, res = checkpoint.rpartition("@")
    if not sep or not res.isdigit():
        return checkpoint, None
    return name, int(res)


def evaluate_checkpoints(model: str, checkpoints: list[str], domains: list[str], episodes: int = 100,
                         resolution: int | str = 64, seed: int = 0, mode: str = "metadataset",
                         ways: int = 5, shots: int = 5, queries: int = 10,
                         progress: bool = False) -> dict[str, dict[str, AccuracySummary]]:
    """None accuracy of several checkpoints of `model` on the test split of each domain, on identical
    episodes. Returns domain -> checkpoint -> summary (plus an "all" entry pooling every episode).

    `resolution` is one size for all, or "native": each checkpoint at the resolution it was trained at (its
    meta; 128 px, the paper's, when it records none). 'NAME@RES' sets one checkpoint's size. Checkpoints at
    different sizes still see the same episodes: the same images, resized."""
    from ..data import EpisodeSampler, load_task, open_dataset
    from ..models.weights import load_backbone

    if episodes < 1:
        raise BadInput(f"episodes must be at least 1, got {episodes}")
    if resolution != "native" and not isinstance(resolution, int):
        raise BadInput(f"resolution must be a number of pixels or 'native', got {resolution!r}")
    torch.manual_seed(seed)     # a 'random' column is then the same network in every run with this seed
    backbones, sizes = {}, {}
    for c in checkpoints:
        name, res = split_resolution(c)
        backbones[c] = load_backbone(model, name)
        sizes[c] = res or ((backbones[c].checkpoint_info.resolution or 128) if resolution == "native" else resolution)
    results: dict[str, dict[str, AccuracySummary]] = {}
    pooled: dict[str, list[float]] = {c: [] for c in checkpoints}
    for domain in domains:
        from pathlib import Path
        dataset = open_dataset(domain, split="all" if Path(domain).expanduser().is_dir() else "test")
        sampler = EpisodeSampler(dataset, mode=mode, ways=ways, shots=shots, queries=queries, seed=seed)
        accs: dict[str, list[float]] = {c: [] for c in checkpoints}
        for i in _progress(range(episodes), progress, "episodes"):
            episode = sampler.episode(i)
            for res in sorted(set(sizes.values())):
                task = load_task(dataset, episode, res)
                for c in checkpoints:
                    if sizes[c] == res:
                        accs[c].append(none_accuracy(backbones[c], task))
        results[domain] = {c: summarize(a) for c, a in accs.items()}
        for c in checkpoints:
            pooled[c] += results[domain][c].accs
    if len(domains) > 1:
        results["all"] = {c: summarize(a) for c, a in pooled.items()}
    return results


def paired_table(results: dict[str, dict[str, AccuracySummary]], reference: str | None = None) -> str:
    """Markdown table of per-episode differences, `reference` (default: the last column) minus each other
    checkpoint, mean ± 95 % CI in points. The episodes are identical, so the difference removes each
    episode's difficulty: its interval says whether one checkpoint beats the other, which two overlapping
    per-checkpoint intervals cannot."""
    names = list(next(iter(results.values())))
    reference = reference or names[-1]
    others = [n for n in names if n != reference]
    lines = ["| domain | " + " | ".join(f"{reference} − {n}" for n in others) + " |",
             "|---" * (len(others) + 1) + "|"]
    for domain, row in results.items():
        ref = row[reference].accs
        cells = []
        for n in others:
            d = summarize([a - b for a, b in zip(ref, row[n].accs)])
            cells.append(f"{100 * d.mean:+.1f} ± {100 * d.ci95:.1f}")
        lines.append(f"| {domain} (n={len(ref)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(results: dict[str, dict[str, AccuracySummary]]) -> str:
    """Markdown table: one row per domain, one column per checkpoint, 'mean ± ci95' in %."""
    names = list(next(iter(results.values())))
    lines = ["| domain | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for domain, row in results.items():
        cells = [f"{100 * row[n].mean:.1f} ± {100 * row[n].ci95:.1f}" for n in names]
        lines.append(f"| {domain} (n={row[names[0]].n}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)
