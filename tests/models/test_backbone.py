import pytest
import torch

from tinytrain.models.backbone import build_backbone
from tinytrain.models.specs import ZOO, conv_layers, get_spec


@pytest.mark.parametrize("name", list(ZOO))
def test_modules_match_layer_descriptions(name):
    net = build_backbone(name)
    layers, mods = net.conv_layers(), net.conv_modules()
    assert len(layers) == len(mods)
    named = dict(net.named_modules())
    for layer, mod in zip(layers, mods):
        assert named[layer.name] is mod
        conv = mod.conv
        assert (conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.groups) == \
            (layer.cin, layer.cout, layer.kernel, layer.stride, layer.groups)
        assert conv.weight.numel() == layer.params


@pytest.mark.parametrize("name,res", [("mcunet-5fps", 128), ("mbv2-w0.35", 96), ("tiny-test", 32)])
def test_spatial_sizes_follow_the_forward_pass(name, res):
    net = build_backbone(name).eval()
    layers = net.conv_layers(res)
    seen = []
    hooks = [m.conv.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[-1], o.shape[-1])))
             for m in net.conv_modules()]
    with torch.no_grad():
        feats = net(torch.randn(1, 3, res, res))
    for h in hooks:
        h.remove()
    assert seen == [(l.h_in, l.h_out) for l in layers]
    assert feats.shape == (1, net.feature_dim)


def test_unknown_model_lists_the_zoo():
    with pytest.raises(ValueError, match="mcunet-5fps"):
        get_spec("resnet-9000")


def test_residual_blocks_are_identity_at_init():
    # The last BN of each residual block starts at zero, so the block passes its input through.
    net = build_backbone("tiny-test").eval()
    blk = next(b for b in net.blocks if b.residual)
    x = torch.randn(2, blk.spec.cin, 8, 8)
    with torch.no_grad():
        assert torch.allclose(blk(x), x)


def test_proxyless_skips_the_empty_slots():
    # 22 upstream slots, two empty -> 20 blocks, 60 convs + feature-mix.
    spec = get_spec("proxyless-w0.3")
    assert len(spec.blocks) == 20 and len(conv_layers(spec)) == 61
