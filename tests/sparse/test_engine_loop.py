"""The faster engine and loop train the same weights: the whole P>M>F loop (cached support prefix, folded
frozen conv+BN, trained slices refreshed once per step, fast depthwise weight gradient, one write-back)
against the dense masked reference in double precision; the augmentation pool against fresh draws; the
prefix shared by the Fisher pass and the fine-tuning."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_weight

from tinytrain.methods import make_method
from tinytrain.methods.base import AdaptConfig
from tinytrain.methods.common import finetune, plan_caches
from tinytrain.models.head import CosineClassifier
from tinytrain.sparse.engine import EnginePlan, LayerSelection, SparseEngine, depthwise_weight_grad, private_backbone
from tinytrain.sparse.fisher import fisher_information
from tinytrain.sparse.reference import MaskedReference

from .test_engine import PLANS, _model

PLANS_LOOP = dict(PLANS)
# every channel of the depthwise 5x5 conv 7 and of the 1x1 conv 9 (the no-slicing path), a bias below them
PLANS_LOOP["full"] = EnginePlan((LayerSelection(7, tuple(range(36)), "out"),
                                 LayerSelection(9, tuple(range(48)), "out")), biases=(6,))


def _task(n_per_class=2, ways=3, res=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ways * n_per_class, 3, res, res, generator=g, dtype=dtype)
    y = torch.arange(ways).repeat_interleave(n_per_class)
    return x, y


def _run(model, x, y, iterations=3, before=None, **kw):
    # micro-batch 2 inside chunks of 5: micro-batches cross no chunk boundary, the last one is short
    cfg = AdaptConfig(iterations=iterations, lr=1e-2, seed=3)
    head = CosineClassifier().double()
    return finetune(model, x, y, head, cfg, 1e-2, 2, before_step=before, prefix_batch_size=5, **kw)


@pytest.mark.parametrize("name", list(PLANS_LOOP))
def test_finetune_with_engine_equals_masked_reference(name):
    plan = PLANS_LOOP[name]
    bb = _model().double()
    x, y = _task()
    eng = SparseEngine(copy.deepcopy(bb), plan)
    ref = MaskedReference(copy.deepcopy(bb), plan)
    s_e = _run(eng, x, y)
    s_r = _run(ref, x, y, before=ref.mask_gradients)
    assert s_e["caches"]["support_cached"]
    for k, v in bb.state_dict().items():
        assert torch.allclose(eng.backbone.state_dict()[k], ref.backbone.state_dict()[k], atol=1e-10, rtol=1e-9), k
    assert s_e["losses"] == pytest.approx(s_r["losses"], rel=1e-10)
    changed = sum(int(not torch.equal(eng.backbone.state_dict()[k], v)) for k, v in bb.state_dict().items())
    assert changed == len(plan.weights) + len(plan.biases)


def test_uncached_prefix_trains_the_same_weights():
    plan = PLANS["dw+bias"]
    bb = _model().double()
    x, y = _task()
    cached, uncached = SparseEngine(copy.deepcopy(bb), plan), SparseEngine(copy.deepcopy(bb), plan)
    _run(cached, x, y)
    stats = _run(uncached, x, y, cache_budget=0)
    assert not stats["caches"]["support_cached"] and "recomputed every iteration" in stats["caches"]["note"]
    for k, v in cached.backbone.state_dict().items():
        assert torch.allclose(v, uncached.backbone.state_dict()[k], atol=1e-12), k


def test_pool_as_large_as_the_iterations_is_fresh_augmentation():
    plan = PLANS["out"]
    bb = _model().double()
    x, y = _task()
    fresh, pooled = SparseEngine(copy.deepcopy(bb), plan), SparseEngine(copy.deepcopy(bb), plan)
    s_f = _run(fresh, x, y, iterations=3)
    s_p = _run(pooled, x, y, iterations=3, augment_pool=10)
    assert s_p["caches"]["pool_views"] == 3          # capped at the iterations: no view is drawn unused
    assert s_p["losses"] == s_f["losses"]
    for k, v in fresh.backbone.state_dict().items():
        assert torch.equal(v, pooled.backbone.state_dict()[k]), k


def test_a_pool_of_one_view_repeats_the_same_pseudo_query():
    # with lr 0 nothing moves, so the loss changes only with the pseudo-query
    bb = _model().double()
    x, y = _task()
    cfg = AdaptConfig(iterations=4, lr=0.0, seed=3)
    head = CosineClassifier().double()
    one = finetune(SparseEngine(copy.deepcopy(bb), PLANS["out"]), x, y, head, cfg, 0.0, 9, augment_pool=1)
    fresh = finetune(SparseEngine(copy.deepcopy(bb), PLANS["out"]), x, y, head, cfg, 0.0, 9)
    assert len(set(one["losses"])) == 1
    assert len(set(fresh["losses"])) > 1
    assert one["losses"][0] == fresh["losses"][0]      # view 0 is the first fresh draw


def test_pool_larger_than_the_budget_says_how_many_views_fit():
    eng = SparseEngine(_model(), PLANS["out"])       # trains from block 2, whose input is 12 x 8 x 8 at 32 px
    per_image = 4 * 12 * 8 * 8
    n = 9
    budget = n * per_image * 4 + 100                 # the support cache and 3 views
    with pytest.raises(ValueError, match="at most 3 views fit"):
        plan_caches(eng, n, (3, 32, 32), augment_pool=8, iterations=40, budget=budget)
    ok = plan_caches(eng, n, (3, 32, 32), augment_pool=3, iterations=40, budget=budget)
    assert ok.support_bytes == n * per_image and ok.pool_bytes == 3 * n * per_image
    with pytest.raises(ValueError, match="support cache"):
        plan_caches(eng, n, (3, 32, 32), augment_pool=1, iterations=40, budget=per_image)


def test_depthwise_weight_grad_matches_pytorch():
    g = torch.Generator().manual_seed(0)
    for k, s in ((3, 1), (3, 2), (5, 1), (7, 2)):
        x = torch.randn(4, 6, 9, 9, generator=g, dtype=torch.float64)
        w = torch.randn(6, 1, k, k, generator=g, dtype=torch.float64)
        out = F.conv2d(x, w, None, s, k // 2, 1, 6)
        go = torch.randn(out.shape, generator=g, dtype=torch.float64)
        want = conv2d_weight(x, w.shape, go, s, k // 2, 1, 6)
        assert torch.allclose(depthwise_weight_grad(x, go, (k, k), (s, s), (k // 2, k // 2)), want, atol=1e-12)


def test_fisher_one_micro_batch_equals_per_image_passes():
    bb = _model()
    x, y = _task(dtype=torch.float32)
    layers = [7, 9, 12, 15]
    one = fisher_information(bb, x.float(), y, layers, batch_size=len(x))
    per_image = fisher_information(bb, x.float(), y, layers, batch_size=1)
    for i in layers:
        assert torch.allclose(one.channel[i], per_image.channel[i], rtol=1e-4, atol=1e-12)


def test_tinytrain_computes_the_support_prefix_once(monkeypatch):
    calls = []
    original = SparseEngine.support_prefix

    def counting(self, x, chunk=64):
        calls.append(self.first_block)
        return original(self, x, chunk)

    monkeypatch.setattr(SparseEngine, "support_prefix", counting)
    x, y = _task(n_per_class=3, res=32, dtype=torch.float32)
    m = make_method("tinytrain", _model(), AdaptConfig(iterations=2, lr=1e-3, resolution=32, memory_budget=400_000,
                                                       options={"candidates": "all"}))
    m.fit(x.float(), y)
    assert len(calls) == 1                 # the Fisher pass's; the fine-tuning continues it
    ph = m.report.extra["phases"]
    assert set(ph) == {"prefix", "fisher", "selection", "training", "prototypes"}
    assert all(v >= 0 for v in ph.values()) and ph["fisher"] > 0 and ph["training"] > 0


def test_fit_with_a_pool_reports_it_and_refuses_too_large_pools():
    x, y = _task(n_per_class=3, res=32, dtype=torch.float32)
    cfg = AdaptConfig(iterations=3, lr=1e-3, resolution=32, options={"augment_pool": 2})
    m = make_method("lastlayer", _model(), cfg)
    m.fit(x.float(), y)
    assert m.report.extra["caches"]["pool_views"] == 2 and m.report.extra["caches"]["support_cached"]
    # lastlayer trains the feature-mix conv, whose input is 16 x 4 x 4 floats (1 KiB) per image: 9 KiB per view
    small = AdaptConfig(iterations=10, lr=1e-3, resolution=32, options={"augment_pool": 8, "cache_budget": "40KB"})
    with pytest.raises(ValueError, match="at most 3 views fit"):
        make_method("lastlayer", _model(), small).fit(x.float(), y)
    with pytest.raises(ValueError, match="augment_pool must be a whole number"):
        make_method("lastlayer", _model(), AdaptConfig(options={"augment_pool": -1})).fit(x.float(), y)


def test_private_backbone_is_an_independent_copy():
    bb = _model()
    bb.conv_modules()[3].register_forward_hook(lambda *a: None)
    c = private_backbone(bb)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(c(x), bb(x))
    assert not any(p.data_ptr() == q.data_ptr() for p, q in zip(c.parameters(), bb.parameters()))
    assert not any(p.data_ptr() == q.data_ptr() for p, q in zip(c.buffers(), bb.buffers()))
    with torch.no_grad():
        c.conv_modules()[5].conv.weight.add_(1.0)
    assert not torch.equal(c.conv_modules()[5].conv.weight, bb.conv_modules()[5].conv.weight)
    c.conv_modules()[3]._forward_hooks.clear()
    assert len(bb.conv_modules()[3]._forward_hooks) == 1


def test_reselect_keeps_the_engine_equal_to_its_backbone():
    """Re-drawing a layer's channels (TraDy-style) writes the old slice back and trains the new one: the engine's
    forward stays the backbone's, and the trainable tensor holds the new channels' weights."""
    bb = _model().double()
    plan = EnginePlan((LayerSelection(7, (0, 1, 2), "out"), LayerSelection(9, (3, 4), "in")))
    eng = SparseEngine(copy.deepcopy(bb), plan)
    x, _ = _task()
    with torch.no_grad():
        for p in eng.trainable_parameters():
            p.add_(0.1)
    eng.reselect({7: (5, 2, 9), 9: (0, 11)})
    with torch.no_grad():
        out = eng(x)
        assert torch.allclose(out, eng.backbone(x), atol=1e-12)   # the old slices were written back first
        w7 = eng.backbone.conv_modules()[7].conv.weight
        assert torch.equal(eng.weight_params["7"], w7[[2, 5, 9]])
        assert torch.allclose(w7[[0, 1]], bb.conv_modules()[7].conv.weight[[0, 1]] + 0.1)
    with pytest.raises(ValueError, match="3 distinct channels"):
        eng.reselect({7: (1, 1, 2)})


def test_redraw_trains_more_channels_than_any_one_iteration_holds():
    bb = _model()
    x, y = _task(n_per_class=3, res=32, dtype=torch.float32)
    cfg = AdaptConfig(iterations=6, lr=1e-2, seed=0, memory_budget=64 * 1024, compute_budget=0.6,
                      options={"channel_choice": "redraw", "ratio_policy": "largest", "channel_ratios": [0.25],
                               "crossed_biases": False})
    method = make_method("tinytrain", bb, cfg, CosineClassifier())
    pred = method.fit(x, y)
    rows = [r.to_dict() for r in method.report.rows]
    assert rows and all(r["channels_updated"] < r["channels_total"] for r in rows)
    before, after = bb.conv_modules(), pred.backbone.conv_modules()
    for r in rows:
        diff = (after[r["layer"]].conv.weight - before[r["layer"]].conv.weight).abs().flatten(1).sum(1)
        assert int((diff > 0).sum()) > r["channels_updated"], r   # several draws were trained
    assert method.report.extra["trainable_parameters"] == sum(
        r["channels_updated"] * before[r["layer"]].conv.weight[0].numel() for r in rows)
