"""The cost model knows int8: the frozen prefix's activations at 1 byte, the `mcu-256kb` profile that prices
plans so, the largest resolution that fits, and the flash constants of an int8 export."""
from __future__ import annotations

import json

import pytest

from tinytrain.costs.devices import (DeviceProfile, cheapest_plan, cost_model, get_device, largest_fitting_resolution,
                                     memory_needed, resolution_advice)
from tinytrain.costs.model import CostModel, flash_constants, int8_prefix_layers
from tinytrain.costs.plan import LayerUpdate, UpdatePlan
from tinytrain.models.specs import conv_layers, get_spec


def test_mcu_256kb_prices_the_frozen_prefix_in_int8():
    dev = get_device("mcu-256kb")
    assert dev.ram_bytes == 256 * 1024 and dev.flash_bytes == 1024 * 1024 and dev.frozen_activation_bits == 8
    assert get_device("mcu-1mb").frozen_activation_bits == 32
    spec = get_spec("mcunet-5fps")
    plan = cheapest_plan(spec, 128)
    need = memory_needed(spec, plan, dev)
    # the same plan with fp32 activations needs four times the prefix's peak; int8 fits the budget, fp32 does not
    assert need <= dev.memory_budget_bytes < CostModel(spec, 128).backward_memory(plan).total
    assert cost_model(spec, 128, dev).precision == "int8"


def test_int8_walk_equals_the_fp32_walk_where_nothing_is_int8():
    """A plan training from block 0 keeps only the stem in int8: the walk differs only by the stem and the
    dequantisation of its output."""
    spec = get_spec("tiny-test")
    ups = [LayerUpdate(1, 0.5, "out", [0, 1, 2, 3, 4, 5, 6, 7])]
    assert int8_prefix_layers(conv_layers(spec, 32), 1) == 1
    f32 = CostModel(spec, 32).sparse_activation_bytes(ups)
    i8 = CostModel(spec, 32, "int8").sparse_activation_bytes(ups)
    assert i8 <= f32
    # training only the last layer: the whole walk below the last stage is int8
    last = len(conv_layers(spec, 32)) - 1
    assert CostModel(spec, 32, "int8").sparse_activation_bytes([], [last]) < CostModel(spec, 32).sparse_activation_bytes([], [last])


def test_largest_fitting_resolution_is_the_edge_of_the_budget():
    dev = get_device("mcu-256kb")
    spec = get_spec("mcunet-5fps")
    best = largest_fitting_resolution(spec, dev, 224)
    assert best is not None and best >= 128
    assert memory_needed(spec, cheapest_plan(spec, best), dev) <= dev.memory_budget_bytes
    assert memory_needed(spec, cheapest_plan(spec, best + 8), dev) > dev.memory_budget_bytes
    text = resolution_advice(spec, dev, best + 16)
    assert f"--resolution {best}" in text and "mcu-256kb" in text
    assert "trains less" in resolution_advice(spec, dev, 128)


def test_frozen_activation_bits_are_checked(tmp_path):
    bad = {"name": "x", "ram": "256KB", "frozen_activation_bits": 16}
    with pytest.raises(ValueError, match="frozen_activation_bits must be 8"):
        DeviceProfile.from_dict(bad)
    f = tmp_path / "d.json"
    f.write_text(json.dumps({"devices": [dict(bad, frozen_activation_bits=8)]}))
    assert get_device("x", f).frozen_activation_bits == 8


def test_int8_flash_constants_are_about_a_quarter_of_fp32():
    spec = get_spec("mcunet-5fps")
    plan = UpdatePlan("mcunet-5fps", [LayerUpdate(40, 0.05, "out", list(range(0, 576, 20)))], [41], 1, "adam",
                      "sparse", 128)
    f32, i8 = flash_constants(spec, plan, 5), flash_constants(spec, plan, 5, "int8")
    weights = sum(l.params for l in conv_layers(spec, 128))
    assert f32 > 4 * weights and weights < i8 < weights + 100_000 and i8 < 1024 * 1024
