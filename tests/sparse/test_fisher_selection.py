import torch
import torch.nn.functional as F

from tinytrain.models.backbone import build_backbone
from tinytrain.models.head import CosineClassifier, class_prototypes
from tinytrain.sparse.fisher import fisher_information
from tinytrain.sparse.selection import layer_scores, select_channels


def test_fisher_matches_direct_autograd():
    torch.manual_seed(0)
    bb = build_backbone("tiny-test").eval()
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    layers = [9, 12, 15]
    res = fisher_information(bb, x, y, layers, batch_size=4)
    head = CosineClassifier()
    with torch.no_grad():
        protos = class_prototypes(bb(x), y)
    acts = {}
    hooks = [bb.conv_modules()[i].register_forward_hook(lambda m, a, o, i=i: acts.__setitem__(i, o)) for i in layers]
    direct = {i: torch.zeros(bb.conv_modules()[i].conv.out_channels) for i in layers}
    for n in range(len(x)):            # per-sample gradient of that sample's loss
        f = bb(x[n:n + 1])
        loss = F.cross_entropy(head(f, protos), y[n:n + 1])
        grads = torch.autograd.grad(loss, [acts[i] for i in layers])
        for i, g in zip(layers, grads):
            direct[i] += (acts[i] * g).sum((2, 3)).pow(2)[0]
    for h in hooks:
        h.remove()
    for i in layers:
        assert torch.allclose(res.channel[i], direct[i] / (2 * len(x)), rtol=1e-4, atol=1e-12)
        assert abs(res.potential[i] - float(direct[i].sum().detach() / 12)) <= 1e-4 * abs(res.potential[i]) + 1e-12


def test_score_and_channel_choice():
    layers = build_backbone("tiny-test").conv_layers()
    pot = {9: 1.0, 10: 1.0}
    s = layer_scores(layers, pot, "full")
    max_w, max_m = max(l.params for l in layers), max(l.macs for l in layers)
    assert abs(s[9] - 1.0 / ((layers[9].params / max_w) * (layers[9].macs / max_m))) < 1e-9
    assert layer_scores(layers, pot, "fisher") == pot
    assert select_channels(2, "fisher", fisher=torch.tensor([0.1, 0.5, 0.2, 0.9])) == (1, 3)
    w = torch.zeros(4, 3, 1, 1); w[2] = 5; w[0] = 1
    assert select_channels(2, "l2", weight=w) == (0, 2)
    assert select_channels(1, "l2", weight=w.transpose(0, 1).contiguous(), axis="in") == (2,)


def _live_tensor_count() -> int:
    import gc
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_fisher_pass_frees_its_graphs():
    # A hook that captured its own activation kept every micro-batch's graph (and weights) alive.
    torch.manual_seed(0)
    net = build_backbone("tiny-test").eval()
    x, y = torch.randn(12, 3, 32, 32), torch.arange(3).repeat_interleave(4)
    layers = list(range(10, 16))
    fisher_information(net, x, y, layers, batch_size=1)      # warm-up (lazy one-off state)
    before = _live_tensor_count()
    fisher_information(net, x, y, layers, batch_size=1)
    assert _live_tensor_count() <= before
