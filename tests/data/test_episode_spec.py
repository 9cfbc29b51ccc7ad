"""EpisodeSpec: the one description of how episodes are drawn, for meta-training and evaluation alike."""
from __future__ import annotations

import json
import random
from dataclasses import asdict

import pytest

from tinytrain.bench.evalconfig import EvalConfig
from tinytrain.data import EpisodeSpec
from tinytrain.errors import BadInput


def test_stored_layout_is_config_jsons_episodes_object_and_reads_back_equal():
    spec = EpisodeSpec("fixed", 5, 1, 15)
    stored = json.loads(json.dumps(EvalConfig(episodes=spec).to_dict()))["episodes"]
    assert list(stored) == ["mode", "ways", "shots", "queries", "max_ways", "max_support"]
    assert stored == {"mode": "fixed", "ways": 5, "shots": 1, "queries": 15, "max_ways": 50, "max_support": 500}
    assert EvalConfig.from_dict({"episodes": stored}).episodes == spec
    assert asdict(EpisodeSpec()) == {"mode": "metadataset", "ways": None, "shots": None, "queries": None,
                                     "max_ways": 50, "max_support": 500}


def test_parse_draw_and_describe():
    spec = EpisodeSpec.parse("3-6", 2, 4)
    assert spec == EpisodeSpec("fixed", (3, 6), 2, 4) and spec.describe() == "3-6-way 2-shot 4-query"
    assert EpisodeSpec.parse() == EpisodeSpec("fixed", 5, 5, 15)
    rng, ref = random.Random(7), random.Random(7)
    for _ in range(20):
        assert spec.draw(rng) == (ref.randint(3, 6), ref.randint(2, 2))
    with pytest.raises(BadInput, match="ways range 5-2 is invalid"):
        EpisodeSpec.parse("5-2")
    with pytest.raises(BadInput, match="ways must be at least 2"):
        EpisodeSpec.parse(1)
    with pytest.raises(BadInput, match="only fixed episodes"):
        EpisodeSpec().draw(rng)


def test_sampler_arguments():
    assert EpisodeSpec("fixed", 3, 2, 1).sampler_kwargs() == {"mode": "fixed", "ways": 3, "shots": 2, "queries": 1}
    assert EpisodeSpec(max_ways=20, max_support=100).sampler_kwargs() == {"mode": "metadataset", "max_ways": 20,
                                                                        "max_support": 100}
    assert EpisodeSpec().describe() == "Meta-Dataset variable way/shot (ways <= 50, support <= 500)"
