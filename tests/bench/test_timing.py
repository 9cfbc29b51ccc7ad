"""The round-robin timing helper and the speed/e2e benches built on it (tiny model, seconds)."""
import json
import os

import pytest
import torch

from tinytrain.bench.timing import pin_threads, ratio_spread, round_robin, spread
from tinytrain.cli import main



def test_round_robin_rotates_the_order_and_times_every_round():
    calls = []
    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = round_robin(runs, rounds=3, warmup=1)
    assert calls == list("abc" "bca" "cab" "abc")         # 1 warm-up round, then 3 timed ones, each rotated
    assert all(len(t) == 3 and all(v >= 0 for v in t) for t in times.values())
    with pytest.raises(ValueError, match="at least one timed round"):
        round_robin(runs, rounds=0)


def test_ratios_are_per_round():
    r = ratio_spread([4.0, 8.0, 3.0], [1.0, 2.0, 1.0])     # per round: 4, 4, 3
    assert r["median"] == 4.0 and r["min"] == 3.0 and r["max"] == 4.0 and r["rounds"] == 3
    assert spread([5.0])["median"] == 5.0


def test_pin_threads():
    got = pin_threads(1)
    assert got["threads"] == 1 == torch.get_num_threads()
    if got["cpus"] is not None:
        assert len(os.sched_getaffinity(0)) == 1
    with pytest.raises(ValueError, match="at least 1"):
        pin_threads(0)


def _json(capsys, argv):
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


TINY = ["--model", "tiny-test", "--resolution", "32", "--ways", "2", "--shots", "3"]


def test_bench_speed_reports_median_ratios_with_spread(capsys):
    out = _json(capsys, ["bench", "speed", *TINY, "--iterations", "2", "--augment-pool", "2"])
    assert set(out["methods"]) == {"fulltrain", "sparseupdate", "tinytrain", "tinytrain-masked"}
    r = out["ratios"]["fulltrain_over_tinytrain_time"]
    assert r["rounds"] == 2 and r["min"] <= r["median"] <= r["max"]
    assert out["threads"] == 1 and out["augment_pool"] == 2
    t = out["methods"]["tinytrain"]
    assert t["measured_saved_bytes"] == t["predicted_saved_bytes"]


def test_bench_e2e_json_has_phases_totals_and_selection_share(capsys, tmp_path):
    png = tmp_path / "phases.png"
    argv = ["bench", "e2e", *TINY, "--iterations", "2", "--rounds", "1", "--methods", "fulltrain,tinytrain",
            "--plot", str(png)]
    assert main(argv) == 0
    text = capsys.readouterr()
    assert "no shipped checkpoint 'pocket'" in text.err and "random initialisation" in text.err
    assert "selection (Fisher pass + choice)" in text.out and png.stat().st_size > 0
    out = _json(capsys, argv[:-2])
    assert out["checkpoint"] == "random" and "random initialisation" in out["checkpoint_note"]
    for m in ("fulltrain", "tinytrain"):
        e = out["methods"][m]
        assert set(e["phases"]) == {"load", "prefix", "fisher", "selection", "training", "prototypes"}
        assert e["total_seconds"] == pytest.approx(sum(e["rounds"][0]["phases"].values()))
        assert e["peak_rss_bytes"] is None or e["peak_rss_bytes"] > 0
    tt = out["methods"]["tinytrain"]
    assert tt["phases"]["fisher"] > 0 and out["methods"]["fulltrain"]["phases"]["fisher"] == 0
    assert 0 < tt["selection_share"] < 1
    assert tt["selection_share"] == pytest.approx((tt["phases"]["fisher"] + tt["phases"]["selection"])
                                                  / tt["total_seconds"])
    assert "fulltrain_over_tinytrain_total" in out["ratios"]


def test_bench_e2e_bad_input(capsys):
    assert main(["bench", "e2e", *TINY, "--methods", "fulltrain"]) == 2
    assert "must include tinytrain" in capsys.readouterr().err
    assert main(["bench", "e2e", *TINY, "--methods", "tinytrain,magic"]) == 2
    assert "magic" in capsys.readouterr().err
    # FullTrain's pool holds images: 6 x 12 KiB per view, so 200 KB holds 2 views
    assert main(["bench", "e2e", *TINY, "--augment-pool", "8", "--cache-budget", "200KB"]) == 2
    assert "at most 2 views fit" in capsys.readouterr().err


def test_bench_pool_on_a_folder(capsys, folder):
    out = _json(capsys, ["bench", "pool", "--model", "tiny-test", "--checkpoint", "random", "--domain", str(folder),
                         "--resolution", "32", "--episodes", "2", "--ways", "2", "--shots", "2", "--queries", "2",
                         "--iterations", "2", "--pools", "1,2"])
    assert set(out["rows"]) == {"fresh", "pool 1", "pool 2"}
    assert out["rows"]["fresh"]["minus_fresh"] is None
    # 2 iterations: a pool of 2 views is the same training as fresh augmentation
    assert out["rows"]["pool 2"]["minus_fresh"] == 0.0
