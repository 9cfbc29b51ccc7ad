"""`--precision int8`: the frozen prefix in integer arithmetic, equal bit for bit to the PyTorch integer
reference (`tinytrain.mcu.quant.integer_prefix`); the float part within 1e-4 of the sparse engine on the
dequantised weights; the arena equal to the cost model's int8 prediction; bad input refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinytrain.cli import main
from tinytrain.costs.model import runtime_arena
from tinytrain.costs.plan import UpdatePlan
from tinytrain.mcu import build
from tinytrain.mcu.export import META_FILE, MODEL_FILE, export_c
from tinytrain.mcu.quant import QParams, dequantise, fixed_point, integer_prefix, q_conv, qparams_of_range
from tinytrain.mcu.reference import run_reference, to_input
from tinytrain.models.weights import load_backbone

from .conftest import TINY_PLAN, frames, save_model, write_folder
from .test_equivalence import check_equal, rel


def run_int8(model_dir, tmp_path, train, labels, test, epochs, calibration=None):
    cm = export_c(model_dir, tmp_path / "tree", precision="int8",
                  calibration=train if calibration is None else calibration)
    bench = tmp_path / "bench"
    bench.mkdir()
    build.write_bench_data(bench / "bench_data.c", train, labels, test, epochs)
    exe, _ = build.build_host(tmp_path / "tree", bench, extra_flags=("-Werror", "-pedantic"))
    return cm, build.parse_output(build.run_host(exe)), run_reference(cm, train, labels, test, epochs)


def check_prefix_bit_identical(cm, c, test):
    want = integer_prefix(test, cm.quant, cm.adapted.predictor.backbone.spec).numpy().astype(np.int8)
    assert sorted(c.prefix) == list(range(len(test)))
    for j in range(len(test)):
        assert c.prefix[j].tobytes() == want[j].tobytes(), f"held-out image {j}: the int8 prefix differs"
    assert len(np.unique(want)) > 50           # a real activation, not a constant


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_int8_tiny_plan_equals_the_integer_reference_and_trains_like_pytorch(tmp_path, optimizer):
    plan = dict(TINY_PLAN, optimizer=optimizer)
    model = save_model(tmp_path / "model", plan, lr=1e-2 if optimizer == "adam" else 5.0)
    train, labels = frames(6, 32, 3)
    test, _ = frames(4, 32, 3, seed=1)
    cm, c, ref = run_int8(model, tmp_path, train, labels, test, epochs=2)
    assert cm.precision == "int8" and cm.network.n_int8 == 6      # layer 6 opens block 2: stem, blocks 0-1 in int8
    check_prefix_bit_identical(cm, c, test)
    check_equal(cm, c, ref, 2, 6)
    # the arena is the cost model's int8 prediction, to the byte
    assert c.arena_bytes == cm.memory.arena_bytes == cm.predicted.total
    assert cm.predicted.total == runtime_arena(cm.network.spec, cm.update_plan, 3, "int8").total
    assert cm.predicted.total < runtime_arena(cm.network.spec, cm.update_plan, 3).total


def test_int8_reference_is_close_to_the_float_prefix(tmp_path):
    """The quantised prefix approximates the float one it was calibrated from (it is a real quantisation)."""
    from tinytrain.mcu.export import prepare

    train, _ = frames(8, 32, 3)
    cm = prepare(save_model(tmp_path / "m", TINY_PLAN), precision="int8", calibration=train)
    qn, bb = cm.quant, cm.adapted.predictor.backbone
    got = dequantise(integer_prefix(train, qn, bb.spec), qn.boundary)
    with torch.no_grad():
        h = bb.stem(to_input(train))
        for blk in bb.blocks[:2]:
            h = blk(h)
    assert got.shape == h.shape
    assert rel(got.numpy(), h.numpy()) < 0.08


def test_fixed_point_requantisation_rounds_like_the_real_multiplier():
    g = np.random.default_rng(0)
    for m in [1e-6, 3.1e-4, 0.0123, 0.5, 0.99999, 1.7, 300.0]:
        m0, shift = fixed_point(m)
        assert 2 ** 30 <= m0 < 2 ** 31 and 1 <= shift <= 62
        acc = g.integers(-2 ** 24, 2 ** 24, 1000)
        got = (acc * m0 + (1 << (shift - 1))) >> shift
        assert np.abs(got - acc * m).max() <= 1.0
    assert qparams_of_range(0.0, 6.0) == QParams(np.float32(6 / 255).item(), -128)


def test_q_conv_matches_a_direct_integer_loop():
    """The reference's conv (float64 on integers) against a plain integer loop, for a 3x3 stride-2 conv."""
    from tinytrain.mcu.quant import QLayer

    g = np.random.default_rng(1)
    w = g.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    bias = g.integers(-5000, 5000, 4).astype(np.int32)
    mult = np.array([fixed_point(m)[0] for m in (0.01, 0.02, 0.003, 0.05)], np.int32)
    shift = np.array([fixed_point(m)[1] for m in (0.01, 0.02, 0.003, 0.05)], np.int8)
    q = QLayer(0, w, bias, mult, shift, QParams(0.1, 5), QParams(0.2, -10), -128, 127, 2, 1)
    x = torch.from_numpy(g.integers(-128, 128, (1, 3, 9, 9)))
    got = q_conv(x, q).numpy()[0]
    xp = np.pad(x.numpy()[0] - 5, ((0, 0), (1, 1), (1, 1)))
    for co in range(4):
        for oy in range(5):
            for ox in range(5):
                acc = int(bias[co]) + int((w[co].astype(np.int64) * xp[:, 2 * oy:2 * oy + 3, 2 * ox:2 * ox + 3]).sum())
                v = ((acc * int(mult[co]) + (1 << (int(shift[co]) - 1))) >> int(shift[co])) - 10
                assert got[co, oy, ox] == min(127, max(-128, v))


def test_int8_mcunet_at_128_equals_the_integer_reference(tmp_path):
    """mcunet-5fps with its shipped checkpoint at 128 px, a plan from block 10 up (SparseUpdate-like shape)."""
    backbone = load_backbone("mcunet-5fps", "pocket")
    from tinytrain.deploy.adapted import AdaptedModel, save_adapted
    from tinytrain.deploy.images import normalisation
    from tinytrain.methods.base import Predictor
    from tinytrain.models.head import CosineClassifier

    plan = {"model": "mcunet-5fps", "kind": "sparse", "resolution": 128, "optimizer": "adam",
            "layers": [{"index": 30, "ratio": 0.1, "axis": "out", "channels": list(range(0, 240, 10))},
                       {"index": 40, "ratio": 0.05, "axis": "out", "channels": list(range(0, 576, 20))}],
            "bias_layers": [31, 41]}
    train, labels = frames(5, 128, 5)
    test, _ = frames(3, 128, 5, seed=2)
    with torch.no_grad():
        protos = torch.stack([backbone(to_input(train[labels == c])).mean(0) for c in range(5)])
    adapted = AdaptedModel(Predictor(backbone, protos, CosineClassifier(10.0, 0.0)), "mcunet-5fps", 128,
                           [f"c{i}" for i in range(5)], normalisation(), "tinytrain",
                           {"method": "tinytrain", "extra": {"lr": 1e-3}}, plan)
    model = save_adapted(tmp_path / "model", adapted)
    cm, c, ref = run_int8(model, tmp_path, train, labels, test, epochs=1)
    assert cm.network.n_int8 == 30
    check_prefix_bit_identical(cm, c, test)
    check_equal(cm, c, ref, 1, 5)
    assert c.arena_bytes == cm.memory.arena_bytes
    assert cm.memory.arena_bytes == cm.predicted.total


# ---------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written

def export(model, out, *extra) -> int:
    return main(["export", "--model-dir", str(model), "--format", "c", "--out", str(out), *extra])


def test_int8_export_writes_the_tree_and_records_the_quantisation(tiny_model, tmp_path, capsys):
    train, labels = frames(4, 32, 3)
    cal = write_folder(tmp_path / "support", train, labels, ["a", "b", "c"])
    out = tmp_path / "c"
    assert export(tiny_model, out, "--precision", "int8", "--calibration", str(cal)) == 0
    meta = json.loads((out / META_FILE).read_text())
    assert meta["precision"] == "int8" and meta["quantisation"]["int8_layers"] == 6
    assert meta["quantisation"]["calibration_images"] == 4
    src = (out / MODEL_FILE).read_text()
    assert "static const int8_t L0_wq[" in src and "static const float L9_w[" not in src
    assert "(int8)" in capsys.readouterr().out


def test_int8_calibration_of_one_image_is_refused(tiny_model, tmp_path, capsys):
    train, labels = frames(1, 32, 3)
    cal = write_folder(tmp_path / "one", train, labels, ["a", "b", "c"])
    out = tmp_path / "c"
    assert export(tiny_model, out, "--precision", "int8", "--calibration", str(cal)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 2" in err and "support images" in err
    assert not out.exists()


def test_int8_without_calibration_and_calibration_without_int8_are_refused(tiny_model, tmp_path, capsys):
    out = tmp_path / "c"
    assert export(tiny_model, out, "--precision", "int8") == 2
    assert "--calibration DIR" in capsys.readouterr().err
    assert export(tiny_model, out, "--calibration", str(tmp_path)) == 2
    assert "--precision int8" in capsys.readouterr().err
    assert not out.exists()


def test_int8_export_of_a_plan_that_trains_the_stem_is_refused(tmp_path, capsys):
    plan = dict(TINY_PLAN, layers=[{"index": 0, "ratio": 0.5, "axis": "out", "channels": [0, 1]}], bias_layers=[])
    model = save_model(tmp_path / "model", plan)
    train, labels = frames(4, 32, 3)
    cal = write_folder(tmp_path / "support", train, labels, ["a", "b", "c"])
    out = tmp_path / "c"
    assert export(model, out, "--precision", "int8", "--calibration", str(cal)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trains the stem" in err and "int8" in err
    assert not out.exists()


def test_cost_model_int8_walk_counts_one_byte_in_the_prefix():
    """The int8 activation walk of an mcunet plan from block 10: the prefix's peak is a quarter of fp32's."""
    from tinytrain.costs.model import CostModel
    from tinytrain.costs.plan import LayerUpdate

    ups = [LayerUpdate(40, 0.05, "out", list(range(0, 576, 20)))]
    f32 = CostModel("mcunet-5fps", 128).sparse_activation_bytes(ups)
    i8 = CostModel("mcunet-5fps", 128, "int8").sparse_activation_bytes(ups)
    assert f32 == 655360 and i8 == 163840          # block 1's expansion: (16 + 64) x 64 x 64 elements
    plan = UpdatePlan("mcunet-5fps", ups, [], 1, "adam", "sparse", 128)
    assert runtime_arena("mcunet-5fps", plan, 5, "int8").forward == i8


def test_a_channel_with_zero_weights_and_a_shift_keeps_its_bias_in_32_bits(tmp_path):
    """As in the ImageNet mcunet-5fps stem: BN scale ~0 on a channel whose shift is not 0."""
    from tinytrain.mcu.export import prepare

    from .conftest import random_backbone

    bb = random_backbone()
    with torch.no_grad():
        bb.stem.bn.weight[3] = 2.5e-6
        bb.stem.bn.bias[3] = -0.85
        bb.stem.conv.weight[5] = 0.0
    train, _ = frames(4, 32, 3)
    cm = prepare(save_model(tmp_path / "m", TINY_PLAN, backbone=bb), precision="int8", calibration=train)
    stem = cm.quant.layers[0]
    assert np.abs(stem.bias.astype(np.int64)).max() <= 1.001 * 2 ** 30     # room left for the accumulator
    assert stem.weight[5].tolist() == np.zeros_like(stem.weight[5]).tolist()
