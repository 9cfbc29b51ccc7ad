"""`tinytrain plan`: device verdicts (FullTrain vs TinyTrain on a Pi Zero 2, mcu-1mb) without training."""
from __future__ import annotations

import json

import pytest

from tinytrain.cli import main
from tinytrain.costs.units import parse_bytes


def plan(capsys, *argv) -> dict:
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_fulltrain_does_not_fit_pi_zero_2(capsys):
    r = plan(capsys, "--model", "mcunet-5fps", "--device", "pi-zero-2", "--method", "fulltrain", "--resolution", "128")
    assert r["fits"] is False and r["fits_memory"] is False
    assert r["batch_size"] == 100 and r["predicted_memory_bytes"] > parse_bytes("512MB")
    assert set(r["memory"]) >= {"updated_weights", "optimizer_state", "activations", "total"}
    assert len(r["plan"]) == 42


@pytest.mark.parametrize("device", ["pi-zero-2", "mcu-1mb"])
def test_tinytrain_fits(device, folders, capsys):
    r = plan(capsys, "--model", "mcunet-5fps", "--checkpoint", "random", "--device", device,
             "--support", str(folders[0]))
    assert r["fits"] is True and r["plan"] and r["batch_size"] == 1
    assert r["backward_macs"] <= 0.15 * r["fulltrain_backward_macs"]
    if device == "mcu-1mb":
        assert r["predicted_memory_bytes"] <= parse_bytes("1MB")
    assert r["update_plan"]["layers"] and r["selection_seconds"] > 0
    # the estimate prices the Fisher pass the dry run made: from the earliest layer it inspected, which no
    # chosen layer precedes, and which leaves out layers that fit the budgets at no ratio (stem onwards)
    first = r["fisher_first_layer"]
    assert 0 < first <= min(row["layer"] for row in r["plan"])
    if device == "pi-zero-2":                        # a device with a throughput: an estimate
        from tinytrain.costs.devices import adaptation_macs
        from tinytrain.models.specs import get_spec
        trained = min([row["layer"] for row in r["plan"]] + r["update_plan"]["bias_layers"])
        args = (get_spec("mcunet-5fps"), 128, r["backward_macs"], r["images"], 40)
        kw = {"first_trained": trained, "cached": r["prefix_cache"]["cached"]}
        assert r["estimate"]["macs_by_phase"] == adaptation_macs(*args, first, **kw)
        assert r["estimate"]["macs_by_phase"]["fisher"] < adaptation_macs(*args, 0, **kw)["fisher"]


def test_plan_needs_support_for_tinytrain(capsys):
    assert main(["plan", "--model", "tiny-test", "--memory-budget", "1MB"]) == 2
    assert "--support" in capsys.readouterr().err


def test_text_output_says_whether_it_fits(capsys):
    assert main(["plan", "--model", "mcunet-5fps", "--device", "pi-zero-2", "--method", "fulltrain"]) == 0
    assert "does NOT fit" in capsys.readouterr().out
