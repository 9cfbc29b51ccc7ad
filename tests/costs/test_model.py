"""Update plans and the cost model's behaviour on the tiny test model and on hand-checkable cases."""
import json

import pytest

from tinytrain.costs import (CostModel, LayerUpdate, UpdatePlan, backward_macs, backward_memory,
                             compute_budget_macs, fulltrain_plan, lastlayer_plan, sparse_backward_macs,
                             sparse_memory_bytes, sparseupdate_plan, tinytl_plan)
from tinytrain.models.specs import lite_residual_branches
from tinytrain.models.specs import conv_layers, get_spec

TINY = get_spec("tiny-test")


def test_plan_json_roundtrip():
    plan = UpdatePlan("tiny-test", [LayerUpdate(9, 0.5), LayerUpdate(5, 1.0, "in"),
                                    LayerUpdate(12, channels=[0, 3])], [13, 14], 1, "sgd", "sparse", 32)
    back = UpdatePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan
    assert [u.index for u in back.layers] == [5, 9, 12]


@pytest.mark.parametrize("kwargs", [dict(optimizer="rmsprop"), dict(kind="lora"), dict(batch_size=0)])
def test_plan_rejects(kwargs):
    with pytest.raises(ValueError):
        UpdatePlan("tiny-test", **kwargs)
    with pytest.raises(ValueError):
        LayerUpdate(3, ratio=1.5)
    with pytest.raises(ValueError):
        LayerUpdate(3, axis="side")
    with pytest.raises(ValueError):
        UpdatePlan("tiny-test", [LayerUpdate(3), LayerUpdate(3, 0.5)])


def test_plan_layer_out_of_range():
    with pytest.raises(ValueError, match="conv layers 0..15"):
        backward_memory(TINY, UpdatePlan("tiny-test", [LayerUpdate(40)], resolution=32))
    with pytest.raises(ValueError, match="plan is for"):
        backward_memory(TINY, UpdatePlan("mcunet-5fps", [LayerUpdate(4)], resolution=32))


def test_sparse_memory_by_hand():
    """Layer 12 of tiny-test: weights x 4 B x (1 + 3) on top of the inference buffer."""
    layers = conv_layers(TINY, 32)
    model = CostModel(TINY, 32)
    l12 = layers[12]
    plan = UpdatePlan("tiny-test", [LayerUpdate(12, 0.5)], resolution=32)
    mem = backward_memory(TINY, plan)
    half = l12.params * (l12.cout // 2) // l12.cout
    assert mem.updated_weights == 4 * half
    assert mem.optimizer_state == 3 * 4 * half
    assert mem.activations == model.peak_buffer
    assert mem.total == model.peak_buffer + 16 * half
    # the fast helpers agree with the plan-level function, from a CostModel and from plain layers
    assert sparse_memory_bytes(model, {12: 0.5}) == mem.total
    assert sparse_memory_bytes(layers, {12: 0.5}) == mem.total
    assert sparse_backward_macs(model, {12: 0.5}) == backward_macs(TINY, plan)
    assert sparse_backward_macs(layers, {12: 0.5}) == backward_macs(TINY, plan)
    # backward MACs: input gradients of layers 13..15 plus half of layer 12's weight gradient
    assert backward_macs(TINY, plan) == sum(l.macs for l in layers[13:]) + l12.macs // 2


def test_costs_grow_with_the_plan():
    model = CostModel(TINY, 32)
    small = model.sparse_memory_bytes([LayerUpdate(13, 0.25)])
    big = model.sparse_memory_bytes([LayerUpdate(13, 1.0)])
    more = model.sparse_memory_bytes([LayerUpdate(13, 1.0), LayerUpdate(9, 1.0)])
    assert small < big < more
    assert model.sparse_backward_macs([LayerUpdate(13)]) < model.sparse_backward_macs([LayerUpdate(9)])
    # SGD keeps a third of Adam's optimizer state
    adam = model.sparse_memory_bytes([LayerUpdate(13)], "adam") - model.peak_buffer
    sgd = model.sparse_memory_bytes([LayerUpdate(13)], "sgd") - model.peak_buffer
    assert adam == 2 * sgd


def test_input_axis_saves_activations_output_axis_does_not():
    """An input-channel update keeps only the selected input channels; an output one the whole input."""
    model = CostModel(TINY, 32)
    early = 3   # an early, large-activation layer: saving its input can exceed the inference buffer
    out_acts = model.sparse_activation_bytes([LayerUpdate(early, 0.25, "out")])
    in_acts = model.sparse_activation_bytes([LayerUpdate(early, 0.25, "in")])
    assert in_acts <= out_acts
    assert model.sparse_weights([LayerUpdate(early, 0.25, "in")]) == pytest.approx(
        model.layers[early].params / 4)


def test_fulltrain_is_twice_forward_and_largest():
    model = CostModel(TINY, 32)
    full = fulltrain_plan(TINY, 32)
    assert backward_macs(TINY, full) == 2 * model.forward_macs
    assert backward_memory(TINY, full).total > backward_memory(TINY, tinytl_plan(TINY, 32)).total
    assert backward_memory(TINY, tinytl_plan(TINY, 32)).total > backward_memory(TINY, lastlayer_plan(TINY, 32)).total
    # batch scales the activations linearly
    a1 = backward_memory(TINY, fulltrain_plan(TINY, 32, batch_size=1)).activations
    assert backward_memory(TINY, full).activations == 100 * a1


def test_tinytl_branches():
    branches = lite_residual_branches(TINY, 32)
    assert len(branches) == len(TINY.blocks)
    for br, blk in zip(branches, TINY.blocks):
        assert br.mid % 8 == 0 and br.mid >= blk.cin and br.cout == blk.cout
        assert br.kernel in (1, 3, 5) and br.kernel <= max(1, br.h_pool)
    with_bias = backward_memory(TINY, tinytl_plan(TINY, 32))
    without = backward_memory(TINY, tinytl_plan(TINY, 32, train_biases=False))
    assert with_bias.total > without.total and without.biases == 0


def test_sparseupdate_policies():
    spec = get_spec("mcunet-5fps")
    plan = sparseupdate_plan(spec)
    assert [u.index for u in plan.layers] == [21, 24, 27, 30, 36, 39]
    assert all(u.axis == "in" for u in plan.layers)
    assert plan.bias_layers == list(range(20, 42))
    assert sparseupdate_plan(spec, 49).bias_layers[:3] == [22, 23, 24]   # 23, 33, 39 are bias-only too
    with pytest.raises(ValueError, match="no published policy"):
        sparseupdate_plan(TINY)
    with pytest.raises(ValueError, match="choose one of"):
        sparseupdate_plan(spec, 100)


def test_compute_budget_macs():
    spec = get_spec("mcunet-5fps")
    assert compute_budget_macs(spec, 0.15, 128) == int(0.15 * 2 * 22_453_504)
    assert compute_budget_macs(spec, 6_500_000, 128) == 6_500_000
    with pytest.raises(ValueError):
        compute_budget_macs(spec, -1, 128)
