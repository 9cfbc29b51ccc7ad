"""MIT tiny-training's int8 `.pkl` models: safe reading, the zoo entries they match, the float backbone.

Files in the same format are generated here (random int8 weights written with torch.save, as upstream wrote
them), so everything but the ImageNet check runs without the real files; those tests look for the real ones
at ../shared/weights/mit-tiny-training/ or $TINYTRAIN_MIT_WEIGHTS and skip with the reason when absent.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tinytrain.cli import main
from tinytrain.models.backbone import build_backbone
from tinytrain.models.mit_int8 import UnsafePickle, read_quantised, to_backbone
from tinytrain.models.specs import conv_layers, get_spec
from tinytrain.models.weights import load_backbone, load_checkpoint, save_checkpoint
from tinytrain.sparse.engine import EnginePlan, LayerSelection, SparseEngine

REPO = Path(__file__).resolve().parents[2]
REAL_DIR = Path(os.environ.get("TINYTRAIN_MIT_WEIGHTS") or REPO.parent / "shared" / "weights" / "mit-tiny-training")
REAL = {"mcunet-5fps": "mcunet-5fps.pkl", "mbv2-w0.35-nomix": "mbv2-w0.35.pkl",
        "proxyless-w0.3-nomix": "proxyless-w0.3.pkl"}


def _conv(rng, cout, cin_g, k, stride=1, groups=1, relu=True):
    return {"in_channel": cin_g * groups, "out_channel": cout, "kernel_size": (k, k), "stride": stride,
            "groups": groups, "params": {
                "weight": rng.integers(-127, 128, (cout, cin_g, k, k)).astype(np.int8),
                "bias": rng.integers(-2000, 2000, cout).astype(np.int32),
                "w_scales": (rng.random(cout) * 0.02 + 0.001).astype(np.float32),
                "x_scale": 0.05, "x_zero": -128 if relu else 0, "y_scale": 6 / 255 if relu else 0.1,
                "y_zero": -128 if relu else 0}}


def fake_file(path: Path, model: str = "mcunet-5fps", seed: int = 0) -> Path:
    """A file in tiny-training's format for `model` (a spec without feature-mix), random int8 weights."""
    spec, rng = get_spec(model), np.random.default_rng(seed)
    blocks = []
    for b in spec.blocks:
        blocks.append({"pointwise1": _conv(rng, b.hidden, b.cin, 1) if b.expand != 1 else None,
                       "depthwise": _conv(rng, b.hidden, 1, b.kernel, b.stride, b.hidden),
                       "pointwise2": _conv(rng, b.cout, b.hidden, 1, relu=False),
                       "residual": {"in_channel": b.cout, "params": {"x_scale": 0.1, "x_zero": 0, "y_scale": 0.1,
                                                                     "y_zero": 0}} if b.residual else None,
                       "se": None})
    obj = {"first_conv": _conv(rng, spec.stem_out, 3, spec.stem_kernel, spec.stem_stride), "blocks": blocks,
           "feature_mix": None, "classifier": _conv(rng, 1000, spec.blocks[-1].cout, 1, relu=False)}
    torch.save(obj, path)
    return path


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_fake_file_reads_as_the_zoo_model_and_dequantises_as_documented(tmp_path):
    qm = read_quantised(fake_file(tmp_path / "m.pkl"))
    assert qm.spec.name == "mcunet-5fps" and qm.spec.input_norm == ((0.5,) * 3, (0.5,) * 3)
    assert len(qm.convs) == len(conv_layers(get_spec("mcunet-5fps"))) == 42
    net = to_backbone(qm, "folded")
    q = qm.convs[5]
    mod = net.conv_modules()[5]
    expect_w = q.weight.double() * q.w_scales.double().view(-1, 1, 1, 1)
    assert torch.allclose(mod.conv.weight.double(), expect_w, rtol=1e-6)
    assert torch.allclose(mod.bn.bias.double(), q.bias.double() * q.x_scale * q.w_scales.double(), rtol=1e-6)


def test_rms_parameterisation_is_the_same_function_with_comparable_weights(tmp_path):
    qm = read_quantised(fake_file(tmp_path / "m.pkl"))
    folded, rms = to_backbone(qm, "folded"), to_backbone(qm, "rms")
    with torch.no_grad():    # layer by layer (random int8 weights make the whole net chaotic under rounding)
        for f, r in zip(folded.conv_modules(), rms.conv_modules()):
            x = torch.randn(1, f.conv.in_channels, 9, 9)
            a, b = f.bn(f.conv(x)), r.bn(r.conv(x))
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
    per_layer = [float(m.conv.weight.detach().pow(2).mean().sqrt()) for m in rms.conv_modules()]
    assert max(per_layer) / min(per_layer) < 1.01          # every layer's weights have RMS 1


def test_input_normalisation_is_applied_exactly_before_the_stem(tmp_path):
    """The pipeline normalises with ImageNet statistics; the stem converts to [-1, 1] before its padding."""
    from tinytrain.data.transforms import normalize

    net = to_backbone(read_quantised(fake_file(tmp_path / "m.pkl")))
    raw = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        got = net.stem(normalize(raw))
        stem = net.stem
        want = stem.act(stem.bn(stem.conv((raw - 0.5) / 0.5)))
    assert torch.allclose(got, want, atol=1e-5)


def test_sparse_engine_sees_the_same_input_map(tmp_path):
    net = to_backbone(read_quantised(fake_file(tmp_path / "m.pkl")))
    x = torch.randn(2, 3, 128, 128)
    for plan in (EnginePlan(weights=(LayerSelection(0, (0, 3)),)), EnginePlan(biases=(30,))):
        engine = SparseEngine(build_like(net), plan, owns_backbone=False)
        with torch.no_grad():    # the stem stage (random int8 weights make deeper outputs chaotic under rounding)
            assert torch.allclose(engine._run(x, -1, 0), net.stem(x), atol=1e-5, rtol=1e-5)


def build_like(net):
    import copy
    return copy.deepcopy(net)


def test_checkpoint_round_trip_keeps_the_input_normalisation(tmp_path):
    net = to_backbone(read_quantised(fake_file(tmp_path / "m.pkl")))
    path = save_checkpoint(tmp_path / "c.safetensors", net, {"resolution": 128})
    again, _ = load_checkpoint(path, expect_model="mcunet-5fps")
    assert again.spec.input_norm == net.spec.input_norm
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(again.logits(x), net.logits(x))
    # the shipped zoo models keep the pipeline's normalisation (no conversion)
    assert build_backbone("mcunet-5fps").stem.input_map is None


def test_import_command_writes_a_checkpoint_and_refuses_to_overwrite(tmp_path, capsys):
    src, out = fake_file(tmp_path / "m.pkl"), tmp_path / "m.safetensors"
    assert main(["import", str(src), "--out", str(out)]) == 0
    net = load_backbone("mcunet-5fps", str(out))
    assert net.checkpoint_info.meta["bn_scale"] == "rms" and net.checkpoint_info.resolution == 128
    assert net.checkpoint_info.meta["bn_scale"] == "rms" and net.spec.input_norm == ((0.5,) * 3, (0.5,) * 3)
    before = out.read_bytes()
    assert main(["import", str(src), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before


def _zip_with_pickle(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
    return path


@pytest.mark.parametrize("case", ["evil-global", "truncated", "text", "list", "torch-tensors", "no-data"])
def test_bad_files_are_one_line_errors_and_nothing_is_written(tmp_path, capsys, case):
    good = fake_file(tmp_path / "good.pkl")
    bad = tmp_path / "bad.pkl"
    if case == "evil-global":
        _zip_with_pickle(bad, pickle.dumps({"first_conv": Evil(), "blocks": [], "classifier": None}))
    elif case == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "text":
        bad.write_text("hello")
    elif case == "list":
        torch.save([np.zeros(3)], bad)
    elif case == "torch-tensors":
        torch.save({"first_conv": torch.zeros(3), "blocks": [], "classifier": None}, bad)
    else:
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("archive/other", b"x")
    out = tmp_path / "out.safetensors"
    assert main(["import", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "Traceback" not in err[0]
    assert not out.exists()
    if case == "evil-global":
        assert "posix.system" in err[0] or "os.system" in err[0]
        with pytest.raises(UnsafePickle):
            read_quantised(bad)


def test_wrong_model_and_feature_mix_mismatch_are_refused(tmp_path, capsys):
    mcunet = fake_file(tmp_path / "mcunet.pkl")
    nomix = fake_file(tmp_path / "mbv2.pkl", "mbv2-w0.35-nomix")
    with pytest.raises(ValueError, match="pass --model mcunet-5fps"):
        load_backbone("proxyless-w0.3-nomix", str(mcunet))
    with pytest.raises(ValueError, match="without its final feature-mix conv.*--model mbv2-w0.35-nomix"):
        load_backbone("mbv2-w0.35", str(nomix))
    out = tmp_path / "o.safetensors"
    assert main(["import", str(nomix), "--model", "mbv2-w0.35", "--out", str(out)]) == 2
    assert "mbv2-w0.35-nomix" in capsys.readouterr().err and not out.exists()
    assert load_backbone("mbv2-w0.35-nomix", str(nomix)).feature_mix is None


# --- the real files (skipped where they are absent) ------------------------------------------------

@pytest.mark.parametrize("model", list(REAL))
def test_real_file_classifies_chelsea_as_a_cat(model):
    path = REAL_DIR / REAL[model]
    if not path.is_file():
        pytest.skip(f"{path} not present (MIT tiny-training weights; set TINYTRAIN_MIT_WEIGHTS to their folder)")
    skimage = pytest.importorskip("skimage.data")
    from PIL import Image

    from tinytrain.data.transforms import EvalTransform

    backbone = load_backbone(model, str(path))
    assert backbone.checkpoint_info.resolution == 128 and backbone.checkpoint_info.source == str(path)
    x = torch.stack([EvalTransform(128)(Image.fromarray(skimage.chelsea())),
                     EvalTransform(128)(Image.fromarray(skimage.coffee()))])
    with torch.no_grad():
        top = backbone.logits(x).argmax(1).tolist()
    assert 281 <= top[0] <= 285, f"chelsea -> ImageNet class {top[0]}, not a cat (281-285)"
    assert top[1] == 967, f"coffee -> ImageNet class {top[1]}, not espresso (967)"


def test_adapt_and_predict_take_a_pkl_checkpoint(tmp_path, capsys):
    """The user's path with a tiny-training file: adapt (128 px from the file), save, predict."""
    import json

    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("support", 2), ("query", 1)):
        for c, colour in enumerate(((200, 30, 30), (30, 200, 30))):
            d = tmp_path / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(colour) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    src = fake_file(tmp_path / "m.pkl")
    out = tmp_path / "adapted"
    assert main(["adapt", "--model", "mcunet-5fps", "--checkpoint", str(src), "--support", str(tmp_path / "support"),
                 "--query", str(tmp_path / "query"), "--method", "lastlayer", "--iterations", "1", "--json",
                 "--save", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resolution"] == 128 and summary["model"] == "mcunet-5fps"     # the file's 128 px
    again, _ = load_checkpoint(out / "model.safetensors", expect_model="mcunet-5fps")
    assert again.spec.input_norm == ((0.5,) * 3, (0.5,) * 3)      # the saved model keeps the file's normalisation
    assert main(["predict", "--model-dir", str(out), str(tmp_path / "query"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
