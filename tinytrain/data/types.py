"""The two types every stage exchanges: an `Episode` (which images) and a `Task` (their tensors)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BadInput
from ..jsonfile import write_text_atomic


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
        """The episode a stored dict describes; anything else (a file edited or damaged) is a BadInput saying
        which field is wrong."""
        if not isinstance(d, dict):
            raise BadInput("is not an object with classes, support and query")
        classes = d.get("classes")
        if not _whole_list(classes) or not classes:
            raise BadInput("has no valid 'classes' (a list of class indices >= 0)")
        pairs = {}
        for name in ("support", "query"):
            value = d.get(name)
            if not isinstance(value, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 and _whole_list(p)
                                                      and p[0] < len(classes) for p in value):
                raise BadInput(f"has no valid '{name}' (a list of [label < {len(classes)}, image index >= 0] pairs)")
            pairs[name] = [tuple(p) for p in value]
        if not pairs["support"]:
            raise BadInput("has an empty 'support'")
        seed = d.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadInput(f"has a 'seed' that is not a whole number ({seed!r})")
        return Episode(list(classes), pairs["support"], pairs["query"], seed)


def _whole_list(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                    for v in value)


EPISODE_FILE_FIX = "delete it (a run folder samples the same episodes again from its seed) or use a new --out"


def save_episodes(path: str | Path, episodes: list[Episode], meta: dict | None = None) -> None:
    """Written atomically: a launch killed while sampling leaves no half file that its resume would refuse."""
    payload = {"meta": meta or {}, "episodes": [e.to_dict() for e in episodes]}
    write_text_atomic(path, json.dumps(payload))


def load_episodes(path: str | Path) -> tuple[list[Episode], dict]:
    """The episodes and metadata of an episode file; a damaged or edited file is one BadInput naming it."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput(f"episode file {path} is not valid JSON ({type(exc).__name__}); {EPISODE_FILE_FIX}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("episodes"), list) \
            or not isinstance(payload.get("meta", {}), dict):
        raise BadInput(f"episode file {path} does not hold {{\"meta\": {{...}}, \"episodes\": [...]}}; {EPISODE_FILE_FIX}")
    meta = payload.get("meta", {})
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise BadInput(f"episode file {path}: meta 'classes' is not a list of class names; {EPISODE_FILE_FIX}")
    episodes = []
    for i, d in enumerate(payload["episodes"]):
        try:
            episodes.append(Episode.from_dict(d))
        except BadInput as exc:
            raise BadInput(f"episode file {path}: episode {i} {exc}; {EPISODE_FILE_FIX}") from None
    return episodes, meta


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
