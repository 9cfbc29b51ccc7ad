"""The benches as a library: each measuring function returns its result object and prints nothing; the
command line (tinytrain.cli.bench_<name>) owns the flags, whose defaults are the settings' defaults."""
from __future__ import annotations

import dataclasses
import json

import pytest

from tinytrain.bench.e2e import E2EResult, E2ESettings, measure_e2e
from tinytrain.bench.memory import MemoryResult, MemorySettings, measure_memory
from tinytrain.bench.pool import PoolResult, PoolSettings, measure_pool
from tinytrain.bench.speed import SpeedResult, SpeedSettings, measure_speed
from tinytrain.cli import build_parser, parse_command_line
from tinytrain.mcu.bench import McuSettings

TINY = dict(model="tiny-test", resolution=32, ways=2, shots=2)



def check_result(result, capsys) -> dict:
    out = result.to_dict()
    assert json.loads(json.dumps(out)) == out
    assert isinstance(result.table(), str) and result.table()
    assert capsys.readouterr() == ("", "")
    return out


def test_measure_speed_returns_its_result_and_prints_nothing(capsys):
    r = measure_speed(SpeedSettings(**TINY, iterations=1))
    assert isinstance(r, SpeedResult) and r.support == 4 and r.rounds == 1
    assert set(r.methods) == {"fulltrain", "sparseupdate", "tinytrain", "tinytrain-masked"}
    assert "profile" not in check_result(r, capsys)


def test_measure_e2e_returns_its_result_and_passes_its_note_to_progress(capsys):
    notes = []
    r = measure_e2e(E2ESettings(**TINY, iterations=1, rounds=1, methods=("fulltrain", "tinytrain")), notes.append)
    assert isinstance(r, E2EResult) and r.checkpoint == "random" and set(r.methods) == {"fulltrain", "tinytrain"}
    assert notes == [f"note: {r.checkpoint_note}"]
    assert "plot" not in check_result(r, capsys)


def test_measure_memory_returns_its_result_and_reports_progress_by_line(capsys):
    lines = []
    r = measure_memory(MemorySettings(**TINY, iterations=1, methods=("none",)), lines.append)
    assert isinstance(r, MemoryResult) and set(r.methods) == {"none"} and r.support_images == 4
    assert lines == ["measuring none ..."]
    check_result(r, capsys)


def test_measure_pool_returns_its_result_and_counts_episodes(folder, capsys):
    counter = []
    r = measure_pool(PoolSettings(model="tiny-test", checkpoint="random", domain=str(folder), resolution=32,
                                  pools=(2, 1, 2), episodes=2, ways=2, shots=2, queries=2, iterations=1),
                     counter.append)
    assert isinstance(r, PoolResult) and list(r.rows) == ["fresh", "pool 1", "pool 2"]
    assert counter == ["episode 1/2", "episode 2/2"]
    assert check_result(r, capsys)["domain"] == f"{folder} (all)"


# (bench, its settings, the arguments it requires, flags that are comma-separated lists)
BENCHES = [("speed", SpeedSettings, [], {}), ("e2e", E2ESettings, [], {"methods": str}),
           ("memory", MemorySettings, [], {"methods": str}), ("pool", PoolSettings, [], {"pools": int}),
           ("mcu", McuSettings, ["--model-dir", "x"], {})]


@pytest.mark.parametrize("bench, settings, required, lists", BENCHES, ids=[b[0] for b in BENCHES])
def test_every_flag_default_is_the_settings_default(bench, settings, required, lists):
    args = parse_command_line(build_parser(), ["bench", bench, *required])
    for field in dataclasses.fields(settings):
        if field.default is dataclasses.MISSING:
            continue
        value = getattr(args, field.name)
        if field.name in lists:
            value = tuple(lists[field.name](v) for v in value.split(","))
        assert value == field.default, (bench, field.name)
