"""The static memory plan: no two live buffers share bytes, and the arena agrees with the cost model."""
from __future__ import annotations

import pytest

from tinytrain.costs.model import CostModel, runtime_arena
from tinytrain.costs.plan import LayerUpdate, UpdatePlan
from tinytrain.mcu.memory import live_floats, plan_memory
from tinytrain.mcu.network import runtime_network
from tinytrain.models.specs import conv_layers, get_spec
from tinytrain.sparse.engine import EnginePlan, LayerSelection


def _plan(model: str, resolution: int, layers: list[tuple[int, int, str]], biases=(), optimizer="adam"):
    """(EnginePlan, UpdatePlan) training the first n channels of each (layer, n, axis)."""
    convs = conv_layers(get_spec(model), resolution)
    sels, ups = [], []
    for i, n, axis in layers:
        size = convs[i].cin if (axis == "in" and convs[i].groups == 1) else convs[i].cout
        sels.append(LayerSelection(i, tuple(range(n)), axis))
        ups.append(LayerUpdate(i, n / size, axis, list(range(n))))
    return (EnginePlan(tuple(sels), tuple(biases)),
            UpdatePlan(model, ups, list(biases), 1, optimizer, "sparse", resolution))


CASES = {
    # the paper's TinyTrain plan shape on MCUNet: b10.pw1 half, b10.dw and b13.dw whole
    "mcunet-tinytrain-128": ("mcunet-5fps", 128, [(30, 120, "out"), (31, 240, "out"), (40, 576, "out")], ()),
    # the mcu-320kb profile's plan shape at 88 px
    "mcunet-dw-88": ("mcunet-5fps", 88, [(40, 72, "out")], ()),
    # SparseUpdate's published MCUNet scheme (input channels) with the biases of the last 22 layers
    "mcunet-sparseupdate-128": ("mcunet-5fps", 128, [(21, 40, "in"), (24, 48, "in"), (27, 48, "in"),
                                                     (30, 48, "in"), (36, 12, "in"), (39, 24, "in")],
                                tuple(range(20, 42))),
    # everything from block 1 up on the tiny model: the backward pass dominates, residual identity paths
    "tiny-deep": ("tiny-test", 32, [(2, 4, "out"), (4, 24, "out"), (8, 6, "in"), (14, 16, "out")], (1, 12)),
    "mbv2-lastlayer-128": ("mbv2-w0.35", 128, [(51, 448, "out")], ()),
    "proxyless-dw-96": ("proxyless-w0.3", 96, [(58, 100, "out"), (55, 64, "out")], (56,)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_plan_places_live_buffers_apart_and_matches_the_cost_model(case, optimizer, precision):
    model, res, layers, biases = CASES[case]
    eplan, uplan = _plan(model, res, layers, biases, optimizer)
    net = runtime_network(get_spec(model), eplan, res, 5, optimizer, precision)
    plan = plan_memory(net)
    bufs = plan.buffers
    for i, a in enumerate(bufs):
        assert a.offset >= plan.persistent_floats and a.offset + a.size <= plan.arena_floats
        for b in bufs[i + 1:]:
            if a.overlaps_in_time(b):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)
    # the placement wastes nothing over the live-set lower bound, and the cost model's independent
    # accounting predicts the arena to the byte
    assert plan.arena_floats == live_floats(plan)
    predicted = runtime_arena(get_spec(model), uplan, 5, precision)
    assert plan.arena_bytes == predicted.total, (plan.arena_bytes, predicted)
    # the runtime holds at least the paper's Table-2 quantities (it also counts biases and the classifier)
    # less the weight gradients, which it never holds all at once (each layer's update is applied as soon
    # as its gradient exists)
    table2 = CostModel(model, res, precision).backward_memory(uplan)
    assert predicted.total >= table2.total - table2.updated_weights


def test_gradients_are_working_buffers_of_their_layer_backward_only():
    """Operator reordering: a layer's weight and shift gradients live during its own backward step only,
    so the arena holds them for one layer at a time, not for the whole plan."""
    eplan, _ = _plan("tiny-test", 32, [(6, 5, "out"), (8, 3, "in"), (10, 2, "out")], (12,))
    net = runtime_network(get_spec("tiny-test"), eplan, 32, 3, "adam")
    plan = plan_memory(net)
    grads = {b.name: b for b in plan.buffers if b.name.startswith(("gw", "gb"))}
    assert sorted(grads) == ["gb12", "gw10", "gw6", "gw8"]
    assert grads["gw6"].size == 5 * 12 and grads["gw8"].size == 12 * 3 and grads["gb12"].size == 48
    steps = {b.start for b in grads.values()}
    assert all(b.start == b.end for b in grads.values()) and len(steps) == 4      # one layer's step each
    for name, b in grads.items():
        i = int(name[2:])
        field = "gw" if name.startswith("gw") else "gb"
        assert getattr(plan.layers[i], field) == b.offset >= plan.persistent_floats
        # the step is that layer's backward, the last reader of what its forward kept for it
        kept = f"saved{i}" if field == "gw" else f"mask{i}"
        assert b.start == next(x.end for x in plan.buffers if x.name == kept)


def test_trained_slices_and_state_are_persistent_and_sized_by_the_optimizer():
    eplan, _ = _plan("tiny-test", 32, [(6, 5, "out"), (8, 3, "in"), (10, 2, "out")], (12,))
    adam = plan_memory(runtime_network(get_spec("tiny-test"), eplan, 32, 3, "adam"))
    sgd = plan_memory(runtime_network(get_spec("tiny-test"), eplan, 32, 3, "sgd"))
    weights = 5 * 12 + 12 * 3 + 2 * 9 + 48       # rows of a 12-in 1x1, columns of a 12-out 1x1, 3x3 kernels, a shift
    d, k = 32, 3
    classifier = k * d + k + 2 * d + k
    assert adam.persistent_floats == 3 * weights + classifier     # weight and two moments; no gradient
    assert sgd.persistent_floats == weights + classifier
    o = adam.layers[6]
    assert len({o.wt, o.m, o.v}) == 3 and max(o.wt, o.m, o.v) < adam.persistent_floats
    assert o.gw >= adam.persistent_floats
    assert sgd.layers[6].m == -1 and sgd.layers[12].bv == -1


def test_depthwise_runs_in_place_except_on_a_residual_block_input():
    net = runtime_network(get_spec("tiny-test"), EnginePlan(biases=(15,)), 32, 3, "adam")
    plan = plan_memory(net)
    # block 0 (tiny-test) has no expansion and a residual: its dw keeps the block input for the add
    assert plan.layers[1].y != plan.layers[1].x and plan.layers[1].tmp == -1
    assert plan.layers[2].res == plan.layers[1].x
    # block 1's dw (stride 2) works in place with a one-channel temporary
    assert plan.layers[4].y == plan.layers[4].x and plan.layers[4].tmp >= 0


def test_identity_gradient_is_kept_only_where_the_gradient_must_reach_the_block_input():
    eplan, _ = _plan("tiny-test", 32, [(6, 4, "out")], (12,))
    plan = plan_memory(runtime_network(get_spec("tiny-test"), eplan, 32, 3, "adam"))
    # block 4 (layers 12-14, residual) lies above the earliest layer 6: its output gradient is kept and added
    assert plan.layers[14].gc != plan.layers[14].gy and plan.layers[12].gres == plan.layers[14].gy
    # block 2 (layers 6-8, residual) starts at the earliest layer: nothing below needs its input gradient
    assert plan.layers[8].gc == plan.layers[8].gy and plan.layers[6].gx == -1 and plan.layers[6].gres == -1


def test_runtime_arena_refuses_non_sparse_plans():
    from tinytrain.costs.baselines import fulltrain_plan
    with pytest.raises(ValueError, match="sparse plans only"):
        runtime_arena(get_spec("tiny-test"), fulltrain_plan("tiny-test", 32), 3)
