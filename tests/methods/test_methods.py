"""Every method: fits, changes exactly what its plan says, reports within budget; clear errors."""
import pytest
import torch

from tinytrain.methods import METHODS, AdaptConfig, make_method
from tinytrain.models.backbone import build_backbone
from tinytrain.models.tinytl import TinyTLBackbone
from tinytrain.sparse.selection import BudgetTooSmall


@pytest.fixture(scope="module")
def task():
    torch.manual_seed(0)
    bb = build_backbone("tiny-test").eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 3, 32, 32, generator=g)
    y = torch.arange(3).repeat(3)
    return bb, x, y


def _cfg(**kw):
    return AdaptConfig(iterations=kw.pop("iterations", 2), resolution=32, augment=kw.pop("augment", False), **kw)


@pytest.mark.parametrize("name", list(METHODS))
def test_fit_changes_exactly_the_plan(task, name):
    bb, x, y = task
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    m = make_method(name, bb, _cfg(lr=1e-2, augment=True))
    pred = m.fit(x, y)
    assert pred.predict(x).shape == (9, 3)
    for k, v in bb.state_dict().items():            # the caller's backbone is untouched
        assert torch.equal(v, before[k]), k
    after = pred.backbone.state_dict()
    rep = m.report
    if name == "none":
        return
    assert rep.train_seconds > 0 and rep.measured_saved_bytes > 0
    up = rep.update_plan.to_dict()
    assert rep.to_dict()["extra"]["update_plan"] == up                 # the saved layout carries the one plan
    if rep.engine_plan is not None:
        assert rep.measured_saved_bytes == rep.extra["predicted_saved_bytes"]
        ep = rep.engine_plan.to_dict()
        mods = bb.conv_modules()
        names = dict((i, l.name) for i, l in enumerate(bb.conv_layers()))
        changed_keys = {k for k in before if not torch.equal(after[k], before[k])}
        allowed = {f"{names[w['index']]}.conv.weight" for w in ep["weights"]}
        allowed |= {f"{names[b]}.bn.bias" for b in ep["biases"]}
        assert changed_keys <= allowed and changed_keys, (changed_keys, allowed)
        for w in ep["weights"]:     # non-selected channels bit-identical
            key = f"{names[w['index']]}.conv.weight"
            W0, W1 = before[key], after[key]
            dim = 0 if (w["axis"] == "out" or mods[w["index"]].conv.groups > 1) else 1
            rest = [c for c in range(W0.shape[dim]) if c not in w["channels"]]
            if rest:
                assert torch.equal(W0.index_select(dim, torch.tensor(rest)), W1.index_select(dim, torch.tensor(rest)))
    if name == "fulltrain":
        assert all(not torch.equal(after[k], before[k]) for k in before if k.endswith("conv.weight"))
    if name == "tinytl":
        assert isinstance(pred.backbone, TinyTLBackbone)
        assert any(k.startswith("lite.") for k in after)
        assert all(torch.equal(after[k], before[k]) for k in before if k.endswith("conv.weight"))
    assert up["model"] == "tiny-test"


@pytest.mark.parametrize("mem,comp", [(60_000, 0.15), (80_000, 0.1), (200_000, 0.3)])
@pytest.mark.parametrize("score", ["full", "fisher", "fisher/memory", "fisher/compute"])
def test_tinytrain_plan_respects_budgets(task, mem, comp, score):
    bb, x, y = task
    m = make_method("tinytrain", bb, _cfg(memory_budget=mem, compute_budget=comp, options={"score": score}))
    rep = m.plan(x, y)
    assert rep.rows and rep.predicted_memory_bytes <= mem
    assert rep.backward_macs <= rep.compute_budget_macs
    for row in rep.to_dict()["plan"]:
        assert set(row) == {"layer", "name", "channels_updated", "channels_total", "score"}
        assert 1 <= row["channels_updated"] <= row["channels_total"]


@pytest.mark.parametrize("opts", [{"channel_choice": "l2"}, {"channel_choice": "random"}, {"layer_choice": "l2"},
                                  {"stop_rule": "skip", "candidates": "all"}, {"axis": "in", "channel_choice": "l2"},
                                  {"bias": True}])
def test_tinytrain_ablation_switches_fit(task, opts):
    bb, x, y = task
    m = make_method("tinytrain", bb, _cfg(options=opts))
    m.fit(x, y)
    assert m.report.measured_saved_bytes == m.report.extra["predicted_saved_bytes"]


def test_budget_too_small_names_the_minimum(task):
    bb, x, y = task
    m = make_method("tinytrain", bb, _cfg(memory_budget=1000))
    with pytest.raises(BudgetTooSmall, match="at least"):
        m.plan(x, y)


def test_bad_support_sets(task):
    bb, x, y = task
    m = make_method("tinytrain", bb, _cfg())
    with pytest.raises(ValueError, match="single class"):
        m.fit(x, torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="mixed sizes"):
        m.fit([torch.randn(3, 32, 32), torch.randn(3, 24, 24)], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one label per image"):
        m.fit(x, y[:5])
    with pytest.raises(ValueError, match="unknown method"):
        make_method("bogus", bb)
    with pytest.raises(ValueError, match="unknown tinytrain option"):
        make_method("tinytrain", bb, _cfg(options={"scroe": "full"})).plan(x, y)


def test_micro_batch_size_does_not_change_the_result(task):
    bb, x, y = task
    outs = []
    for b in (1, 4, 9):
        m = make_method("tinytrain", bb, _cfg(lr=1e-2, batch_size=b, options={"fisher_batch_size": b}))
        outs.append(m.fit(x, y).predict(x))
    assert torch.allclose(outs[0], outs[1], atol=1e-4) and torch.allclose(outs[0], outs[2], atol=1e-4)


def test_automatic_learning_rate(task):
    bb, x, y = task
    m = make_method("lastlayer", bb, _cfg(lr=None, options={"lr_candidates": [1e-3, 1e-2]}))
    m.fit(x, y)
    assert m.report.lr in (1e-3, 1e-2) and set(m.report.extra["lr_search"]) == {"0.001", "0.01"}


def _colour_tasks():
    """A tiny-test whose stem channels 0-3 see only red and 4-7 only green, and two tasks whose images carry
    their class information in red (task A; green is negative, so channels 4-7 stay at 0) or in green (B)."""
    torch.manual_seed(0)
    bb = build_backbone("tiny-test").eval()
    with torch.no_grad():
        for m in bb.conv_modules():          # residual branches on, as in a trained network (init zeroes them)
            m.bn.weight.fill_(1.0)
        w = torch.zeros_like(bb.stem.conv.weight)
        w[:4, 0] = torch.rand(4, 3, 3) + 0.5
        w[4:, 1] = torch.rand(4, 3, 3) + 0.5
        bb.stem.conv.weight.copy_(w)
    g = torch.Generator().manual_seed(1)
    base = torch.rand(3, 1, 32, 32, generator=g).repeat_interleave(4, 0) + 0.3 * torch.rand(12, 1, 32, 32, generator=g)
    y = torch.arange(3).repeat_interleave(4)
    neg = -torch.ones(12, 1, 32, 32)
    task_a = torch.cat([base, neg, neg], 1)          # information in red
    task_b = torch.cat([neg, base, neg], 1)          # the same patterns in green
    return bb, task_a, task_b, y


def test_plans_follow_where_each_task_carries_its_information():
    bb, xa, xb, y = _colour_tasks()
    opts = {"candidates": "all", "ratio_policy": "fisher-mass", "fisher_mass": 0.5, "stop_rule": "skip"}
    cfg = _cfg(memory_budget=10 ** 9, compute_budget=1.0, options=opts)
    plans = []
    for x in (xa, xb):
        rep = make_method("tinytrain", bb, cfg).plan(x, y)
        plans.append({w.index: set(w.channels) for w in rep.engine_plan.weights})
    a, b = plans
    for layer in (0, 1):                                           # the stem and blocks.0.dw (one filter per channel)
        assert layer in a and layer in b
        assert a[layer] <= {0, 1, 2, 3} and b[layer] <= {4, 5, 6, 7}   # each task trains the channels it uses
    assert a != b


@pytest.mark.parametrize("method", ["fulltrain", "tinytrain"])
def test_gradients_through_the_prototypes_equal_one_autograd_graph(task, method):
    """proto_grad: the two-pass, micro-batched gradient equals P>M>F's single graph (features of the support
    set with grad -> class means -> cosine loss of the pseudo-query), one SGD step, augmentation off."""
    import torch.nn.functional as F
    from tinytrain.models.head import CosineClassifier, class_prototypes
    bb, x, y = task
    lr = 0.05
    results = {}
    for pg in (True, False):
        for b in (1, len(x)):
            cfg = _cfg(lr=lr, iterations=1, batch_size=b, augment=False, optimizer="sgd",
                       memory_budget=10 ** 9, compute_budget=1.0,
                       options={"proto_grad": pg} | ({"ratio_policy": "largest"}    # whole layers: every weight
                                                     if method == "tinytrain" else {}))
            results[(pg, b)] = make_method(method, bb, cfg).fit(x, y).backbone.state_dict()
    ref = build_backbone("tiny-test")
    ref.load_state_dict(bb.state_dict())
    ref.eval()
    head = CosineClassifier()
    loss = F.cross_entropy(head(ref(x), class_prototypes(ref(x), y)), y, reduction="sum") / len(x)
    grads = dict(zip([k for k, _ in ref.named_parameters()], torch.autograd.grad(loss, list(ref.parameters()),
                                                                                  allow_unused=True)))
    got = results[(True, 1)]
    trained = [k for k in got if not torch.equal(got[k], bb.state_dict()[k])]
    assert trained
    for k in trained:
        expect = bb.state_dict()[k] - lr * grads[k]
        assert torch.allclose(got[k], expect, atol=1e-5, rtol=1e-4), k
        assert torch.allclose(results[(True, len(x))][k], got[k], atol=1e-6)        # micro-batch independent
    assert any(not torch.allclose(results[(False, 1)][k], got[k], atol=1e-6) for k in trained)   # it matters


def test_channel_ablation_changes_the_plan_at_the_default_budgets():
    """Fig. 6b's ablation measures something only if Fisher, L2 and random channels give different plans
    with every option and budget at its default (mcunet-5fps, shipped checkpoint, 128 px, 1 MiB, 15 %)."""
    from tinytrain.models.weights import load_backbone
    bb = load_backbone("mcunet-5fps", "pocket")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 128, 128, generator=g)
    x[5:, 0] *= 0.2                                    # two classes apart in colour
    y = torch.arange(2).repeat_interleave(5)
    plans = {}
    for choice in ("fisher", "l2", "random"):
        cfg = AdaptConfig(iterations=1, resolution=128, augment=False, options={"channel_choice": choice})
        rep = make_method("tinytrain", bb, cfg).plan(x, y)
        plans[choice] = {(w.index, c) for w in rep.engine_plan.weights for c in w.channels}
        assert rep.predicted_memory_bytes <= 1024 * 1024
    jaccard = lambda a, b: len(a & b) / len(a | b)
    # mostly different channels, not one layer's half (the plan of the former defaults: Jaccard 0.88)
    assert jaccard(plans["fisher"], plans["l2"]) < 0.5 and jaccard(plans["fisher"], plans["random"]) < 0.5


def test_fisher_pass_inspects_only_layers_a_plan_can_hold_and_the_plan_is_unchanged():
    """At the default budgets (mcunet-5fps, 128 px, 1 MiB, 15 %) most layers fit at no ratio even alone: the
    Fisher pass leaves them out (and stops its backward above them), and the plan is the one the selection
    makes from a pass over every layer."""
    from tinytrain.methods.tinytrain import candidate_layers
    from tinytrain.models.weights import load_backbone
    from tinytrain.sparse.fisher import fisher_information
    from tinytrain.sparse.selection import select_layers
    bb = load_backbone("mcunet-5fps", "pocket")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(10, 3, 128, 128, generator=g)
    x[5:, 1] *= 0.3
    y = torch.arange(2).repeat_interleave(5)
    cfg = AdaptConfig(iterations=1, resolution=128, augment=False)
    m = make_method("tinytrain", bb, cfg)
    rep = m.plan(x, y)
    kept = rep.extra["candidates"]
    every = candidate_layers(bb, "all")
    dropped = [i for i in every if i not in kept]
    assert dropped and kept and min(kept) > 0
    full = fisher_information(bb, x, y, every, m.head, batch_size=len(x))
    _, cost = m._costs(bb.spec, 128)
    mem, comp = rep.memory_budget, rep.compute_budget_macs
    totals = {i: l.channels("out") for i, l in enumerate(bb.conv_layers(128))}
    for i in dropped:                      # each dropped layer fits at no ratio on its own
        with pytest.raises(BudgetTooSmall):
            select_layers([i], {i: 1.0}, lambda j, r: tuple(range(max(1, round(r * totals[j])))), totals, cost,
                          mem, comp, stop_rule="skip")
    chosen, biases, _ = m.select(bb, full.channel, 128)
    assert [(c.index, c.channels) for c in chosen] == [(w.index, tuple(w.channels)) for w in rep.engine_plan.weights]
    assert sorted(biases) == sorted(rep.engine_plan.biases)
    first = make_method("tinytrain", bb, AdaptConfig(iterations=1, resolution=128, augment=False,
                                                     options={"stop_rule": "first"}))
    assert first.plan(x, y).extra["candidates"] == every          # there an unfitting layer ends the walk
    drawn = make_method("tinytrain", bb, AdaptConfig(iterations=1, resolution=128, augment=False,
                                                     options={"channel_choice": "random"}))
    assert drawn.plan(x, y).extra["candidates"] == every          # the walk's draws stay those of every layer
