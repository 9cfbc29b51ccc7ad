"""The zoo as data: layer counts, weights and MACs of the paper's backbones (paper Table 4, layer_tables.md)."""
import pytest

from tinytrain.models.specs import PAPER_MODELS, ZOO, ArchSpec, conv_layers, get_spec

TABLE4 = {  # layers, conv weights, forward MACs @128
    "mcunet-5fps": (42, 463_216, 22.45e6),
    "mbv2-w0.35": (52, 288_864, 17.45e6),
    "proxyless-w0.3": (61, 357_680, 19.21e6),
}


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_model_figures(name):
    layers = conv_layers(get_spec(name), 128)
    n, params, macs = TABLE4[name]
    assert len(layers) == n
    assert sum(l.params for l in layers) == params
    assert abs(sum(l.macs for l in layers) - macs) <= 0.005 * macs
    assert [l.index for l in layers] == list(range(n))


def test_mcunet_key_rows():
    """Spot rows of layer_tables.md (weights, MACs)."""
    layers = conv_layers(get_spec("mcunet-5fps"), 128)
    assert (layers[21].name, layers[21].params, layers[21].macs) == ("blocks.7.pw1", 6400, 409_600)
    assert (layers[31].kind, layers[31].kernel, layers[31].stride, layers[31].params) == ("dw", 7, 2, 11_760)
    assert (layers[41].cin, layers[41].cout, layers[41].h_out, layers[41].params) == (576, 160, 4, 92_160)
    assert layers[31].is_depthwise and not layers[41].is_depthwise


def test_feature_mix_is_last_layer():
    for name, idx, cin, cout in (("mbv2-w0.35", 51, 112, 448), ("proxyless-w0.3", 60, 96, 384)):
        last = conv_layers(get_spec(name), 128)[-1]
        assert (last.index, last.kind, last.cin, last.cout, last.h_out) == (idx, "feature-mix", cin, cout, 4)
        assert last.macs == cin * cout * 16


def test_resolution_changes_macs_not_params():
    spec = get_spec("mcunet-5fps")
    a, b = conv_layers(spec, 128), conv_layers(spec, 96)
    assert sum(l.params for l in a) == sum(l.params for l in b)
    assert sum(l.macs for l in b) < sum(l.macs for l in a)
    assert b[0].h_in == 96


def test_spec_roundtrip_and_unknown():
    for spec in ZOO.values():
        assert ArchSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="choose one of"):
        get_spec("resnet-50")
