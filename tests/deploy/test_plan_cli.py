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


def test_plan_needs_support_for_tinytrain(capsys):
    assert main(["plan", "--model", "tiny-test", "--memory-budget", "1MB"]) == 2
    assert "--support" in capsys.readouterr().err


def test_text_output_says_whether_it_fits(capsys):
    assert main(["plan", "--model", "mcunet-5fps", "--device", "pi-zero-2", "--method", "fulltrain"]) == 0
    assert "does NOT fit" in capsys.readouterr().out
