"""End-to-end time and energy estimates: calibrated on the paper's Pi Zero 2 / Jetson Nano figures, checked
against them, shown by `tinytrain plan --device`, unavailable (not an error) for profiles without them."""
import json

import pytest

from tinytrain.cli import main
from tinytrain.costs.devices import (PAPER_END_TO_END, adaptation_macs, calibrate, calibrate_power, get_device,
                                     paper_check)
from tinytrain.costs.model import CostModel
from tinytrain.models.specs import conv_layers, get_spec


@pytest.mark.parametrize("device", ["pi-zero-2", "jetson-nano"])
def test_profiles_carry_the_calibrated_throughput(device):
    d = get_device(device)
    assert d.train_macs_per_second == pytest.approx(calibrate(device), rel=0.005)
    assert "Table" in d.estimate_basis


def test_pi_power_is_fig5b_energy_over_table9_time():
    assert get_device("pi-zero-2").power_watts == pytest.approx(calibrate_power(), rel=0.005)
    # TinyTrain on MCUNet: 1.2 kJ over 18.7 + 526 s
    assert 1.2e3 / 544.7 == pytest.approx(calibrate_power(), rel=0.05)
    assert get_device("jetson-nano").power_watts is None


def test_estimates_lie_within_25_percent_of_table9():
    rows = [r for r in paper_check(get_device("pi-zero-2")) if r["source"] == "Table 9"]
    assert len(rows) == len(PAPER_END_TO_END["pi-zero-2"]) == 6
    for r in rows:
        assert abs(r["error"]) <= 0.25, r


def test_plans_over_the_ram_are_flagged_as_lower_bounds():
    fig5 = [r for r in paper_check(get_device("pi-zero-2")) if r["source"] == "Fig. 5"]
    over = [r for r in fig5 if r["exceeds_ram"]]
    assert {r["method"] for r in over} == {"fulltrain", "tinytl"}
    assert all(r["estimate_seconds"] < r["paper_seconds"] for r in over)


def test_adaptation_macs_without_caching_is_whole_forwards():
    spec = get_spec("mcunet-5fps")
    full = sum(l.macs for l in conv_layers(spec, 128))
    back = CostModel(spec, 128).forward_macs * 2                    # FullTrain's backward
    parts = adaptation_macs(spec, 128, back, 25, 40)
    assert parts["training"] == pytest.approx(40 * 25 * (2 * full + back))
    assert parts["prototypes"] == pytest.approx(25 * full) and parts["prefix"] == 0 and parts["fisher"] == 0
    # caching the prefix below layer 30 (block 10) removes it from every support-set forward
    cached = adaptation_macs(spec, 128, 6.5e6, 25, 40, first_trained=30, cached=True)
    plain = adaptation_macs(spec, 128, 6.5e6, 25, 40)
    suffix = sum(l.macs for l in conv_layers(spec, 128) if l.block >= 10)
    assert cached["prefix"] == pytest.approx(25 * (full - suffix))
    assert plain["training"] - cached["training"] == pytest.approx(40 * 25 * (full - suffix))
    pooled = adaptation_macs(spec, 128, 6.5e6, 25, 40, first_trained=30, cached=True, pool_views=8)
    assert pooled["training"] == pytest.approx(8 * 25 * (full - suffix) + 40 * 25 * (2 * suffix + 6.5e6))


def _plan(capsys, *argv):
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_prints_the_estimate_and_the_cache(capsys):
    r = _plan(capsys, "--model", "mcunet-5fps", "--method", "sparseupdate", "--device", "pi-zero-2",
              "--resolution", "128")
    e = r["estimate"]
    assert e["available"] and e["seconds"] > 0 and e["joules"] == pytest.approx(e["seconds"] * 2.19, rel=0.01)
    assert r["images_assumed"] and r["images"] == 25 and r["iterations"] == 40
    c = r["prefix_cache"]
    assert c["cached"] and c["bytes"] == 25 * 4 * 40 * 8 * 8     # the input of blocks.6: 40 x 8 x 8 at 128 px
    assert e["seconds_without_cache"] > e["seconds"]
    assert main(["plan", "--model", "mcunet-5fps", "--method", "sparseupdate", "--device", "pi-zero-2"]) == 0
    text = capsys.readouterr().out
    assert "an estimate, not a measurement" in text and "Table 9" in text and "support prefix cache" in text


def test_cache_not_held_where_the_device_has_no_room(capsys):
    r = _plan(capsys, "--model", "mcunet-5fps", "--method", "sparseupdate", "--device", "mcu-1mb",
              "--resolution", "64")
    assert r["prefix_cache"]["cached"] is False and "recomputed every iteration" in r["prefix_cache"]["note"]
    assert r["estimate"]["available"] is False


def test_profile_without_the_new_fields_still_plans(capsys, tmp_path):
    f = tmp_path / "dev.json"
    f.write_text(json.dumps([{"name": "board", "ram": "1GB", "memory_budget": "512MB"}]))
    r = _plan(capsys, "--model", "mcunet-5fps", "--method", "lastlayer", "--device", "board", "--devices-file", str(f))
    assert r["fits"] is True and r["estimate"]["available"] is False
    assert "no train_macs_per_second" in r["estimate"]["basis"]
    assert main(["plan", "--model", "mcunet-5fps", "--method", "lastlayer", "--device", "board",
                 "--devices-file", str(f)]) == 0
    assert "end-to-end estimate unavailable" in capsys.readouterr().out


def test_bad_estimate_fields_are_refused(capsys, tmp_path):
    f = tmp_path / "dev.json"
    f.write_text(json.dumps([{"name": "board", "ram": "1GB", "train_macs_per_second": -3}]))
    assert main(["plan", "--model", "mcunet-5fps", "--method", "lastlayer", "--device", "board",
                 "--devices-file", str(f)]) == 2
    assert "train_macs_per_second must be positive" in capsys.readouterr().err


def test_plan_paper_check(capsys):
    rows = _plan(capsys, "--device", "pi-zero-2", "--paper-check")
    assert {r["source"] for r in rows} == {"Table 9", "Fig. 5"} and len(rows) == 6 + 15
    assert main(["plan", "--device", "pi-zero-2", "--paper-check"]) == 0
    assert "Table 9" in capsys.readouterr().out
    assert main(["plan", "--device", "mcu-1mb", "--paper-check"]) == 2
    assert "only for pi-zero-2" in capsys.readouterr().err
