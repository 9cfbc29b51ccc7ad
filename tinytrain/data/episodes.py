"""EpisodeSpec: how few-shot episodes are drawn, the one description that meta-training episodes
(tinytrain.offline.episodes) and evaluation episodes (EvalConfig.episodes, drawn by sampler.EpisodeSampler)
both use. Pure Python (no torch, no numpy), so building and checking an evaluation config stays cheap.

Two modes:
  fixed        `ways` and `shots` are each a number or an inclusive (low, high) range drawn per episode
               (`draw`), `queries` images per class (`EpisodeSpec.parse("5-20", "1-10", 10)`);
  metadataset  Meta-Dataset's variable way and shot, capped by `max_ways` and `max_support` (ways, shots and
               queries None).
As a dataclass it is a run folder's config.json "episodes" object key for key
({"mode", "ways", "shots", "queries", "max_ways", "max_support"}); `EpisodeSpec(**stored)` reads it back.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import BadInput

MODES = ("metadataset", "fixed")


def parse_range(text: str | int | tuple[int, int], what: str) -> tuple[int, int]:
    """'5' -> (5, 5); '5-20' -> (5, 20): a fixed value or an inclusive range drawn per episode."""
    if isinstance(text, int):
        lo = hi = text
    elif isinstance(text, (tuple, list)):
        lo, hi = int(text[0]), int(text[1])
    else:
        parts = str(text).split("-")
        try:
            lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
        except ValueError:
            lo = hi = None
        if lo is None:
            raise BadInput(f"{what} must be a number or a range like 5-20, got {text!r}")
    if lo < 1 or hi < lo:
        raise BadInput(f"{what} range {lo}-{hi} is invalid; use positive numbers with low <= high")
    return lo, hi


def _as_range(value: int | tuple[int, int] | None, what: str) -> tuple[int, int]:
    if value is None:
        raise BadInput(f"fixed episodes need {what} (got None)")
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _shown(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


@dataclass(frozen=True)
class EpisodeSpec:
    """How episodes are drawn (see the module docstring). `parse` builds a checked fixed-mode spec from
    command-line values, `draw(rng)` picks one episode's (ways, shots), `describe()` says it in words and
    `sampler_kwargs()` gives EpisodeSampler's arguments."""

    mode: str = "metadataset"                     # metadataset (variable way/shot) | fixed
    ways: int | tuple[int, int] | None = None     # fixed: a number or an inclusive range drawn per episode
    shots: int | tuple[int, int] | None = None    # fixed: a number or an inclusive range drawn per episode
    queries: int | None = None                    # fixed: query images per class
    max_ways: int = 50                            # metadataset: cap on the ways drawn
    max_support: int = 500                        # metadataset: cap on the support set's size

    @staticmethod
    def parse(ways: str | int | tuple[int, int] = 5, shots: str | int | tuple[int, int] = 5,
              queries: int = 15) -> "EpisodeSpec":
        """A fixed-mode spec from '5' / '5-20' style values (a range is drawn per episode); at least 2 ways."""
        if queries < 1:
            raise BadInput(f"queries per class must be at least 1, got {queries}")
        ways_range = parse_range(ways, "ways")
        if ways_range[0] < 2:
            raise BadInput(f"ways must be at least 2 (got {ways!r}): a 1-way episode has nothing to tell apart")
        shots_range = parse_range(shots, "shots")
        one = lambda r: r[0] if r[0] == r[1] else r
        return EpisodeSpec("fixed", one(ways_range), one(shots_range), int(queries))

    @property
    def ways_range(self) -> tuple[int, int]:
        return _as_range(self.ways, "ways")

    @property
    def shots_range(self) -> tuple[int, int]:
        return _as_range(self.shots, "shots")

    def draw(self, rng: random.Random) -> tuple[int, int]:
        """One episode's (ways, shots) of a fixed-mode spec, each uniform over its range."""
        if self.mode != "fixed":
            raise BadInput(f"only fixed episodes draw their ways and shots here (this spec is {self.mode!r}; "
                           "EpisodeSampler draws Meta-Dataset episodes)")
        return rng.randint(*self.ways_range), rng.randint(*self.shots_range)

    def describe(self) -> str:
        if self.mode == "fixed":
            return f"{_shown(self.ways_range)}-way {_shown(self.shots_range)}-shot {self.queries}-query"
        return f"Meta-Dataset variable way/shot (ways <= {self.max_ways}, support <= {self.max_support})"

    def sampler_kwargs(self) -> dict:
        """Keyword arguments of tinytrain.data.sampler.EpisodeSampler for this spec."""
        if self.mode == "fixed":
            return {"mode": "fixed", "ways": self.ways, "shots": self.shots, "queries": self.queries}
        return {"mode": "metadataset", "max_ways": self.max_ways, "max_support": self.max_support}
