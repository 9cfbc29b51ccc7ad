"""The engine trains exactly what a dense masked reference trains, and keeps what accounting says."""
import copy

import pytest
import torch

from tinytrain.models.backbone import build_backbone
from tinytrain.sparse.accounting import predicted_saved_bytes
from tinytrain.sparse.engine import (EnginePlan, LayerSelection, ReLU6Mask, SparseEngine, count_saved_bytes,
                                     pack_bits, unpack_bits)
from tinytrain.sparse.reference import MaskedReference


def _model(seed=0):
    torch.manual_seed(seed)
    bb = build_backbone("tiny-test")
    # non-trivial BN statistics so that the frozen-BN affine map matters
    for m in bb.conv_modules():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.data.uniform_(0.5, 1.5)
        m.bn.bias.data.uniform_(0.2, 0.6)
    return bb.eval()


def _loss(feats, target):
    return ((feats - target) ** 2).sum()


PLANS = {
    "out": EnginePlan((LayerSelection(7, (0, 3, 5, 9), "out"), LayerSelection(12, (1, 2), "out"))),
    "in": EnginePlan((LayerSelection(7, (1, 4), "in"), LayerSelection(15, tuple(range(0, 16, 3)), "in"))),
    "dw+bias": EnginePlan((LayerSelection(8, (0, 2, 7), "out"), LayerSelection(11, (5,), "in")),
                          biases=(9, 13, 15)),
    "stem": EnginePlan((LayerSelection(0, (1, 2), "out"),), biases=(2,)),
}


@pytest.mark.parametrize("name", list(PLANS))
def test_engine_matches_masked_reference(name):
    plan = PLANS[name]
    bb = _model()
    eng = SparseEngine(copy.deepcopy(bb), plan)
    ref = MaskedReference(copy.deepcopy(bb), plan)
    opt_e = torch.optim.Adam(eng.trainable_parameters(), lr=1e-2)
    opt_r = torch.optim.Adam(ref.trainable_parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    target = torch.randn(6, 32, generator=g)
    for _ in range(4):
        x = torch.randn(6, 3, 32, 32, generator=g)
        opt_e.zero_grad(); _loss(eng(x), target).backward(); opt_e.step(); eng.sync()
        opt_r.zero_grad(); _loss(ref(x), target).backward(); ref.mask_gradients(); opt_r.step()
    sd_e, sd_r, sd_0 = eng.backbone.state_dict(), ref.backbone.state_dict(), bb.state_dict()
    changed = 0
    for k in sd_0:
        assert torch.allclose(sd_e[k], sd_r[k], atol=2e-5, rtol=1e-4), k
        changed += int(not torch.equal(sd_e[k], sd_0[k]))
    assert changed == len(plan.weights) + len(plan.biases)
    # frozen weights are bit-identical; selected rows moved
    mods0, mods_e = bb.conv_modules(), eng.backbone.conv_modules()
    for w in plan.weights:
        W0, We = mods0[w.index].conv.weight, mods_e[w.index].conv.weight
        dim = 0 if (w.axis == "out" or mods0[w.index].conv.groups > 1) else 1
        keep = torch.ones(W0.shape[dim], dtype=torch.bool)
        keep[list(w.channels)] = False
        assert torch.equal(W0.index_select(dim, keep.nonzero().flatten()),
                           We.index_select(dim, keep.nonzero().flatten()))
        assert not torch.equal(W0.index_select(dim, torch.tensor(w.channels)),
                               We.index_select(dim, torch.tensor(w.channels)))


@pytest.mark.parametrize("name", list(PLANS))
@pytest.mark.parametrize("batch", [1, 5])
def test_measured_saved_bytes_equal_prediction(name, batch):
    plan = PLANS[name]
    eng = SparseEngine(_model(), plan)
    x = torch.randn(batch, 3, 32, 32)
    with count_saved_bytes(eng) as counter:
        feats = eng(x)
    feats.sum().backward()
    assert counter.bytes == predicted_saved_bytes(eng.backbone.spec, plan, batch)


@pytest.mark.parametrize("shape,channels_last", [((3, 5, 7, 9), False), ((3, 5, 7, 9), True),
                                                   ((2, 48, 16, 16), True), ((1, 3), False), ((13,), False)])
def test_relu6_masks_are_kept_as_bits_and_give_relu6s_gradient(shape, channels_last):
    torch.manual_seed(0)
    x = torch.randn(shape) * 4
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mask = (x > 0) & (x < 6)
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    back = unpack_bits(packed, mask)
    assert torch.equal(back, mask) and back.stride() == mask.stride()   # same values, same memory layout
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(shape)
    with count_saved_bytes() as counter:
        ya = ReLU6Mask.apply(a * 1.0)
    ya.backward(g)
    yb = torch.nn.functional.relu6(b * 1.0)
    yb.backward(g)
    assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)
    assert counter.bytes == (mask.numel() + 7) // 8


def test_prefix_runs_without_autograd_and_optimizer_sees_only_slices():
    plan = PLANS["out"]
    eng = SparseEngine(_model(), plan)
    h = eng.prefix(torch.randn(2, 3, 32, 32))
    assert not h.requires_grad
    assert eng.trainable_count() == 4 * 1 * 5 * 5 + 2 * 16   # 4 depthwise 5x5 filters + 2 rows of a 16->48 1x1
    assert all(not p.requires_grad for p in eng.backbone.parameters())


def test_bad_plans_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        SparseEngine(_model(), EnginePlan())
    with pytest.raises(ValueError, match="does not exist"):
        SparseEngine(_model(), EnginePlan((LayerSelection(99, (0,)),)))
    with pytest.raises(ValueError, match="channel indices must be in"):
        SparseEngine(_model(), EnginePlan((LayerSelection(7, (500,)),)))
