"""The paper's cost figures (Tables 2, 4, 7, 8, 11), reproduced by the analytic model at 128 px."""
import pytest

from tinytrain.costs import (CostModel, backward_macs, backward_memory, fulltrain_plan, lastlayer_plan,
                             peak_inference_buffer_bytes, saved_activation_bytes_last_k_blocks, sparseupdate_plan)
from tinytrain.models.specs import conv_layers, get_spec

MiB, KiB = 2 ** 20, 1024

# model: layers, params (M), forward MACs (M), peak buffer (KiB), FullTrain MiB, FullTrain MACs (M),
#        LastLayer MiB, LastLayer MACs (M or None)
PAPER = {
    "mcunet-5fps": (42, 0.463, 22.45, 640, 906, 44.9, 2.03, None),
    "mbv2-w0.35": (52, None, 17.45, 896, 1049, 34.9, 1.64, 0.80),
    "proxyless-w0.3": (61, None, 19.21, 512, 857, 38.4, 1.06, 0.59),
}
TABLE11 = {  # KB for k = 1..6
    "mcunet-5fps": [80.3, 135.9, 191.6, 281.0, 392.3, 479.0],
    "mbv2-w0.35": [54.7, 101.6, 148.5, 218.4, 325.7, 432.9],
    "proxyless-w0.3": [60.3, 89.1, 118.0, 171.6, 241.5, 299.3],
}


def close(value, target, rel):
    return abs(value - target) <= rel * abs(target)


@pytest.mark.parametrize("name", PAPER)
def test_forward_figures(name):
    n, params, macs, peak_kib, *_ = PAPER[name]
    layers = conv_layers(get_spec(name), 128)
    assert len(layers) == n
    if params is not None:
        assert close(sum(l.params for l in layers) / 1e6, params, 0.01)
    assert close(sum(l.macs for l in layers) / 1e6, macs, 0.01)
    assert peak_inference_buffer_bytes(layers) == peak_kib * KiB


@pytest.mark.parametrize("name", PAPER)
def test_table11_saved_activations(name):
    spec = get_spec(name)
    for k, target in enumerate(TABLE11[name], 1):
        assert close(saved_activation_bytes_last_k_blocks(spec, k, 128) / KiB, target, 0.02), k


@pytest.mark.parametrize("name", PAPER)
def test_fulltrain_and_lastlayer(name):
    spec = get_spec(name)
    *_, full_mib, full_macs, last_mib, last_macs = PAPER[name]
    full = fulltrain_plan(spec, 128, "adam")
    assert full.batch_size == 100
    assert close(backward_memory(spec, full).total / MiB, full_mib, 0.03)
    assert close(backward_macs(spec, full) / 1e6, full_macs, 0.03)
    last = lastlayer_plan(spec, 128, "adam")
    assert close(backward_memory(spec, last).total / MiB, last_mib, 0.03)
    if last_macs is not None:
        assert close(backward_macs(spec, last) / 1e6, last_macs, 0.03)


def test_mcunet_sparseupdate_and_table7():
    spec = get_spec("mcunet-5fps")
    plan = sparseupdate_plan(spec)   # the "100 KB" scheme
    mem = backward_memory(spec, plan)
    assert close(mem.total / MiB, 1.43, 0.03)
    assert close(backward_macs(spec, plan) / 1e6, 11.9, 0.03)
    # Table 7 breakdown: updated weights 0.20, optimizer (Adam) 0.60, activation 0.63 MB
    assert close(mem.updated_weights / MiB, 0.20, 0.03)
    assert mem.optimizer_state == 3 * mem.updated_weights
    assert mem.activations == 640 * KiB
    # SGD column: 1.03 MB (SparseUpdate), 1.33 MB (LastLayer)
    assert close(backward_memory(spec, sparseupdate_plan(spec, optimizer="sgd")).total / MiB, 1.03, 0.03)
    assert close(backward_memory(spec, lastlayer_plan(spec, optimizer="sgd")).total / MiB, 1.33, 0.03)


def test_table8_adds_all_weights():
    """Table 8 (peak incl. all weights): LastLayer 3.84 MB, SparseUpdate 3.24 MB on MCUNet."""
    spec = get_spec("mcunet-5fps")
    model = CostModel(spec, 128)
    assert close((model.backward_memory(lastlayer_plan(spec)).total + model.all_weights_bytes()) / MiB, 3.84, 0.03)
    assert close((model.backward_memory(sparseupdate_plan(spec)).total + model.all_weights_bytes()) / MiB, 3.24, 0.03)
