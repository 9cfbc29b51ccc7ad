"""Plans for a device whose C runtime runs the frozen prefix in int8 (mcu-256kb) are priced that way: the
method selects, reports and checks its budget with the int8 cost model, so `tinytrain adapt --device
mcu-256kb` finds a 128 px plan where the float32 pricing finds none."""
from __future__ import annotations

import json

import pytest
import torch

from tinytrain.cli import main
from tinytrain.costs.devices import get_device
from tinytrain.costs.model import CostModel, runtime_arena
from tinytrain.costs.plan import UpdatePlan
from tinytrain.methods import AdaptConfig, make_method
from tinytrain.models.backbone import build_backbone
from tinytrain.models.specs import get_spec
from tinytrain.sparse.selection import BudgetTooSmall


def _task(res: int = 128):
    torch.manual_seed(0)
    x = torch.randn(6, 3, res, res)
    return x, torch.tensor([0, 0, 1, 1, 2, 2])


def test_int8_pricing_finds_a_plan_that_float32_pricing_cannot():
    bb = build_backbone("mcunet-5fps").eval()
    x, y = _task()
    budget = get_device("mcu-256kb").memory_budget_bytes
    cfg = dict(iterations=1, resolution=128, memory_budget=budget, compute_budget=0.15, augment=False)
    with pytest.raises(BudgetTooSmall):
        make_method("tinytrain", bb, AdaptConfig(**cfg)).plan(x, y)
    rep = make_method("tinytrain", bb, AdaptConfig(**cfg, precision="int8")).plan(x, y)
    assert rep.rows and rep.predicted_memory_bytes <= budget
    plan = rep.update_plan
    # the report prices the plan it chose with the int8 model; float32 pricing of the same plan is over budget
    assert rep.predicted_memory_bytes == CostModel(bb.spec, 128, "int8").backward_memory(plan).total
    assert CostModel(bb.spec, 128).backward_memory(plan).total > budget


def test_unknown_precision_is_refused():
    bb = build_backbone("tiny-test")
    with pytest.raises(ValueError, match="precision must be one of float32, int8"):
        make_method("tinytrain", bb, AdaptConfig(precision="int4"))


def test_adapt_and_plan_on_mcu_256kb_at_128px(folders, tmp_path, capsys):
    support = str(folders[0])
    args = ["--model", "mcunet-5fps", "--support", support, "--device", "mcu-256kb",
            "--resolution", "128"]
    assert main(["plan", *args, "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["fits"] is True and planned["plan"]
    assert planned["predicted_memory_bytes"] <= get_device("mcu-256kb").memory_budget_bytes
    assert main(["adapt", *args, "--iterations", "1", "--json", "--save", str(tmp_path / "m")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"] and out["predicted_memory_bytes"] <= out["memory_budget_bytes"]
    plan = UpdatePlan.from_dict(planned["update_plan"])
    assert out["predicted_memory_bytes"] == CostModel("mcunet-5fps", 128, "int8").backward_memory(plan).total
    # the int8 C runtime's whole arena for that plan (what `export --precision int8` plans, to the byte)
    # stays inside the device's 256 KB
    saved = UpdatePlan.from_dict(json.loads((tmp_path / "m" / "adapted.json").read_text())["update_plan"])
    arena = runtime_arena(get_spec("mcunet-5fps"), saved, n_classes=len(out["classes"]), precision="int8").total
    assert arena <= get_device("mcu-256kb").ram_bytes, arena


def test_a_resolution_too_large_for_the_device_names_one_that_fits(folders, capsys):
    assert main(["adapt", "--model", "mcunet-5fps", "--checkpoint", "random", "--support", str(folders[0]),
                 "--device", "mcu-256kb", "--resolution", "224", "--iterations", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the largest resolution that fits mcu-256kb is" in err, err
