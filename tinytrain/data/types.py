"""The two types every stage exchanges: an `Episode` (which images) and a `Task` (their tensors)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Episode:
    """A few-shot task as indices into a dataset, small enough to store as JSON.

    `classes[j]` is the dataset class index of episode label j; `support` and `query` hold
    (episode label, item index within that class) pairs.
    """

    classes: list[int]
    support: list[tuple[int, int]]
    query: list[tuple[int, int]]
    seed: int | None = None

    @property
    def ways(self) -> int:
        return len(self.classes)

    def shots(self) -> list[int]:
        counts = [0] * self.ways
        for label, _ in self.support:
            counts[label] += 1
        return counts

    def to_dict(self) -> dict:
        return {"classes": self.classes, "support": [list(p) for p in self.support],
                "query": [list(p) for p in self.query], "seed": self.seed}

    @staticmethod
    def from_dict(d: dict) -> "Episode":
        return Episode(list(d["classes"]), [tuple(p) for p in d["support"]],
                       [tuple(p) for p in d["query"]], d.get("seed"))


def save_episodes(path: str | Path, episodes: list[Episode], meta: dict | None = None) -> None:
    payload = {"meta": meta or {}, "episodes": [e.to_dict() for e in episodes]}
    Path(path).write_text(json.dumps(payload))


def load_episodes(path: str | Path) -> tuple[list[Episode], dict]:
    payload = json.loads(Path(path).read_text())
    return [Episode.from_dict(e) for e in payload["episodes"]], payload.get("meta", {})


@dataclass
class Task:
    """Tensors of one episode: normalised float images (N, 3, R, R) and labels 0..ways-1."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor | None = None
    query_y: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)

    @property
    def ways(self) -> int:
        return int(self.support_y.max()) + 1
