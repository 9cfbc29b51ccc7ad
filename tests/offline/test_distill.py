"""`tinytrain distill`: photo patches, CutMix, the KL loss, held-out agreement, the resumable run and its
bad inputs. A tiny teacher (tiny-test with a 1000-way classifier) stands in for the ImageNet MobileNetV2."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tinytrain.cli import main
from tinytrain.data.photos import resolve_images
from tinytrain.data.transforms import PhotoPatches, cutmix
from tinytrain.offline.distill import agreement, kd_loss
from tinytrain.models.backbone import build_backbone
from tinytrain.models.weights import load_backbone, load_checkpoint, save_checkpoint

from .helpers import distill_setup, lite_run_args


@pytest.fixture
def setup(tmp_path):
    return distill_setup(tmp_path)


def test_photo_patches_are_seeded_and_varied():
    photos = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (60, 70, 3)).astype(np.uint8))
              for i in range(2)]
    a = PhotoPatches(photos, 32, seed=3)(6)
    b = PhotoPatches(photos, 32, seed=3)(6)
    c = PhotoPatches(photos, 32, seed=4)(6)
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert len({round(float(x.std()), 4) for x in a}) == 6         # six different patches


def test_cutmix_pastes_a_box_from_another_image():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16).contiguous()
    y = cutmix(x, torch.Generator().manual_seed(1))
    changed = (y != x).any(1)                                       # (4, 16, 16)
    assert changed.any()
    for i in range(4):
        if changed[i].any():
            assert set(y[i, 0][changed[i]].tolist()) <= {0.0, 1.0, 2.0, 3.0} - {float(i)}
            rows, cols = changed[i].nonzero(as_tuple=True)           # one rectangle
            assert changed[i][rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()


def test_kd_loss_and_agreement():
    t = torch.randn(10, 1000)
    assert kd_loss(t, t, 8.0).abs() < 1e-4 and kd_loss(torch.randn(10, 1000), t, 8.0) > 0.1
    torch.manual_seed(0)
    net = build_backbone("tiny-test", num_classes=1000).eval()
    crops = torch.randn(12, 3, 32, 32)
    with torch.no_grad():
        logits = net.logits(crops)
    same = agreement(net, logits, crops)
    assert same.top1 == same.top5_overlap == same.teacher_in_top5 == 1.0 and same.n == 12
    shifted = agreement(net, logits.roll(7, -1), crops)       # every teacher class moved by 7: never agrees
    assert shifted.top1 == 0.0 and shifted.teacher_in_top5 == 0.0


def test_distill_run_resumes_exactly_and_exports(setup, capsys):
    tmp, args = setup
    out, whole = tmp / "run", tmp / "whole"
    assert main(args + ["--out", str(out), "--max-steps", "3"]) == 0
    assert "resumes" in capsys.readouterr().out
    assert main(args + ["--out", str(out), "--export", str(tmp / "features.safetensors")]) == 0
    done = capsys.readouterr().out
    assert "64 images seen" in done and "held-out top-1 agreement" in done
    assert main(args + ["--out", str(whole)]) == 0
    a, b = load_file(str(out / "last.safetensors")), load_file(str(whole / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)     # resumed == uninterrupted
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 9))
    curve = [r for r in log if "agree_top1" in r]
    assert [r["images_seen"] for r in curve] == [0, 32, 64] and all(r["agree_n"] == 20 for r in curve)
    assert (out / "agreement.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        "step-0000000.safetensors", "step-0000004.safetensors", "step-0000008.safetensors"]
    student, meta = load_checkpoint(out / "last.safetensors")
    assert student.classifier.out_features == 1000 and meta["images_seen"] == 64 and meta["resolution"] == 32
    cfg = json.loads((out / "config.json").read_text())
    assert [i["file"] for i in cfg["images"]] == ["p0.png", "p1.png"] and len(cfg["images"][0]["sha256"]) == 64
    features = load_backbone("tiny-test", str(tmp / "features.safetensors"))
    fmeta = features.checkpoint_info.meta
    assert features.classifier is None and fmeta["stage"] == "distill" and fmeta["shipped_as"] == "distilled"
    assert torch.equal(features.state_dict()["stem.conv.weight"], a["stem.conv.weight"])
    # the same folder with another setting is refused, naming the setting
    assert main(args + ["--out", str(out), "--temperature", "4"]) == 2
    assert "temperature" in capsys.readouterr().err


def test_distill_learns_the_teacher(setup):
    """A few dozen steps at a high learning rate raise held-out agreement well above its start."""
    tmp, args = setup
    out = tmp / "learn"
    args = [a for a in args]
    args[args.index("--epochs") + 1] = "3"
    args[args.index("--steps-per-epoch") + 1] = "15"
    assert main(args + ["--out", str(out), "--lr", "0.01", "--cutmix", "0", "--temperature", "2"]) == 0
    curve = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if "agree_top1" in l]
    assert curve[-1]["agree_top5_overlap"] > curve[0]["agree_top5_overlap"] + 0.15


@pytest.mark.parametrize("change, message", [
    (("--images", "EMPTY"), "no image file"),
    (("--images", "TEXT"), "not a readable image"),
    (("--teacher-checkpoint", "random"), "not an ImageNet classifier"),
    (("--init", "OTHER"), "is for model 'mcunet-5fps'"),
    (("--resolution", "20"), "--resolution 20"),
    (("--heldout", "PHOTOS"), "also a training image"),
    (("--pocket-fraction", "1.5"), "--pocket-fraction"),
])
def test_distill_bad_input_is_refused_before_anything_is_written(setup, capsys, change, message):
    tmp, args = setup
    (tmp / "empty").mkdir()
    (tmp / "text.png").write_text("not an image")
    save_checkpoint(tmp / "other.safetensors", build_backbone("mcunet-5fps"))
    subst = {"EMPTY": str(tmp / "empty"), "TEXT": str(tmp / "text.png"), "OTHER": str(tmp / "other.safetensors"),
             "PHOTOS": str(tmp / "photos")}
    flag, value = change
    args = list(args)
    if flag in args:
        i = args.index(flag)
        args[i + 1] = subst.get(value, value)
    else:
        args += [flag, subst.get(value, value)]
    assert main(args + ["--out", str(tmp / "bad")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp / "bad").exists()


def test_evaluation_textures_are_refused():
    skimage = pytest.importorskip("skimage")
    from pathlib import Path
    brick = Path(skimage.__file__).parent / "data" / "brick.png"
    with pytest.raises(ValueError, match="held back for evaluation"):
        resolve_images([str(brick)])
    assert resolve_images(["skimage:chelsea"])[0].name == "chelsea.png"


def test_feature_term_trains_a_projector_and_resumes(setup):
    from tinytrain.offline.state import load_state
    tmp, args = setup
    out = tmp / "feat"
    assert main(args + ["--out", str(out), "--feature-weight", "1", "--max-steps", "3"]) == 0
    state = load_state(out / "state.safetensors")
    assert state["projector"]["weight"].shape == (32, 32)        # tiny-test feature 32 -> teacher feature 32
    assert main(args + ["--out", str(out), "--feature-weight", "1"]) == 0
    assert main(args + ["--out", str(tmp / "whole"), "--feature-weight", "1"]) == 0
    a, b = load_file(str(out / "last.safetensors")), load_file(str(tmp / "whole" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_glyphs_mixed_into_every_batch(setup):
    from tinytrain.offline.distill import BatchSource, DistillConfig, PocketGlyphs
    from tinytrain.offline.episodes import episode_seed
    from .helpers import write_png_folder
    tmp, _ = setup
    glyphs = str(write_png_folder(tmp / "glyphs", classes=10, per_class=4))
    photos = [Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8))]
    key = lambda t: round(float(t.sum()), 3)
    for loss in ("kl", "ce"):
        cfg = DistillConfig(student="tiny-test", images=[{"source": "x", "sha256": "a"}], resolution=32,
                            batch_size=8, pocket_fraction=0.5, pocket_data=glyphs, pocket_loss=loss, cutmix=0.0)
        source = BatchSource(cfg, photos, PocketGlyphs(glyphs, 32, 0))
        x, gx, gy = source.batch(3)
        glyph_rows, glyph_labels = PocketGlyphs(glyphs, 32, 0)(3, 4)      # what step 3 draws from the glyphs
        source.patches.reseed(episode_seed(cfg.seed, 3))
        photo_rows = source.patches(4)
        if loss == "kl":        # glyphs go to the teacher with the photos, shuffled in
            assert x.shape == (8, 3, 32, 32) and len(gx) == len(gy) == 0
            assert sorted(map(key, x)) == sorted(map(key, torch.cat([photo_rows, glyph_rows])))
        else:                   # glyphs keep their labels for the glyph classifier
            assert x.shape == (4, 3, 32, 32) and torch.equal(gx, glyph_rows) and torch.equal(gy, glyph_labels)
            assert sorted(map(key, x)) == sorted(map(key, photo_rows))
        again = BatchSource(cfg, photos, PocketGlyphs(glyphs, 32, 0)).batch(3)
        assert all(torch.equal(a, b) for a, b in zip((x, gx, gy), again))     # seeded per step


def test_glyph_classifier_keeps_training_and_resumes(setup):
    from .helpers import write_png_folder
    tmp, args = setup
    glyphs = str(write_png_folder(tmp / "glyphs", classes=10, per_class=4))
    extra = ["--pocket-fraction", "0.5", "--pocket-data", glyphs, "--pocket-loss", "ce"]
    out = tmp / "g"
    assert main(args + extra + ["--out", str(out), "--max-steps", "3"]) == 0
    assert main(args + extra + ["--out", str(out)]) == 0
    assert main(args + extra + ["--out", str(tmp / "whole")]) == 0
    a, b = load_file(str(out / "last.safetensors")), load_file(str(tmp / "whole" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert all("train_glyph_acc" in r for r in log if "loss" in r)


def test_distill_in_two_processes(setup, capsys):
    """--nproc 2: each rank distils its half of every batch; gradients are all-reduced, rank 0 writes."""
    tmp, args = setup
    out = tmp / "two"
    assert main(args + ["--out", str(out), "--nproc", "2"]) == 0
    assert "64 images seen" in capsys.readouterr().out
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 9))
    assert [r["images_seen"] for r in log if "agree_top1" in r] == [0, 32, 64]
    student, meta = load_checkpoint(out / "last.safetensors")
    assert meta["images_seen"] == 64 and json.loads((out / "config.json").read_text())["nproc"] == 2


def test_lite_residual_branches_distilled_beside_a_frozen_student(setup, capsys):
    """--lite-residual: TinyTL's branches learn to match the teacher through the frozen student's own ImageNet
    head (TinyTL pretrains them on ImageNet); the export carries them and `tinytl` starts from them."""
    from tinytrain.methods import AdaptConfig, make_method
    tmp, args = setup
    base = tmp / "base"
    assert main(args + ["--out", str(base), "--export", str(tmp / "plain.safetensors")]) == 0
    out, features = tmp / "lite", tmp / "lite-features.safetensors"
    assert main(lite_run_args(args, base, out, features)) == 0
    start, trained = load_file(str(base / "last.safetensors")), load_file(str(out / "last.safetensors"))
    lite = [k for k in trained if k.startswith("lite.")]
    assert lite and start.keys() == {k for k in trained if not k.startswith("lite.")}
    assert all(torch.equal(trained[k], start[k]) for k in start)            # backbone, its BN statistics, head
    assert any(trained[k].abs().sum() > 0 for k in lite if k.endswith("bn2.weight"))   # branches moved off 0
    assert any(not torch.equal(trained[k], torch.zeros_like(trained[k])) for k in lite if k.endswith("running_mean"))
    curve = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if "agree_top1" in l]
    assert curve[-1]["agree_top5_overlap"] > curve[0]["agree_top5_overlap"]    # the branches add agreement
    exported, plain = load_file(str(features)), load_file(str(tmp / "plain.safetensors"))
    assert {k for k in exported if not k.startswith("lite.")} == plain.keys()
    assert all(torch.equal(exported[k], plain[k]) for k in plain) and all(torch.equal(exported[k], trained[k]) for k in lite)
    backbone = load_backbone("tiny-test", str(features))
    assert backbone.classifier is None and backbone.checkpoint_info.lite.resolution == 32
    x, y = torch.randn(6, 3, 32, 32), torch.arange(3).repeat(2)
    m = make_method("tinytl", backbone, AdaptConfig(resolution=32, iterations=1, lr=0.0))
    m.fit(x, y)
    assert m.report.extra["lite_pretrained"] is True
    fresh = make_method("tinytl", backbone, AdaptConfig(resolution=32, iterations=1, lr=0.0, options={"lite": "fresh"}))
    fresh.fit(x, y)
    assert fresh.report.extra["lite_pretrained"] is False
    with pytest.raises(ValueError, match="lite='old'"):
        make_method("tinytl", backbone, AdaptConfig(resolution=32, iterations=1, options={"lite": "old"})).fit(x, y)
    # bad input, refused before a folder is made: no trained student, or one without its ImageNet head
    capsys.readouterr()
    assert main(args + ["--out", str(tmp / "bad1"), "--lite-residual"]) == 2
    assert "--init" in capsys.readouterr().err and not (tmp / "bad1").exists()
    assert main(args + ["--out", str(tmp / "bad2"), "--lite-residual", "--init", str(tmp / "plain.safetensors")]) == 2
    assert "no ImageNet classifier" in capsys.readouterr().err and not (tmp / "bad2").exists()


def test_shipping_a_checkpoint_keeps_its_pretrained_branches(setup):
    """strip_classifier (what `scripts/release.py ship` and `export_features` write) keeps the lite-residual
    branches a checkpoint carries; meta-training from it starts from the plain backbone (the branches are
    TinyTL's, not the ProtoNet's)."""
    from tinytrain.offline.metatrain import initial_model, strip_classifier
    from tinytrain.models.tinytl import TinyTLBackbone
    tmp, _ = setup
    torch.manual_seed(0)
    tl = TinyTLBackbone(build_backbone("tiny-test").spec, 32, num_classes=1000)
    for br in tl.lite:
        torch.nn.init.normal_(br.bn2.weight)
    save_checkpoint(tmp / "with-lite.safetensors", tl, {"resolution": 32})
    loaded, _ = load_checkpoint(tmp / "with-lite.safetensors")
    bare = strip_classifier(loaded)
    assert bare.classifier is None and isinstance(bare, TinyTLBackbone)
    assert all(torch.equal(bare.state_dict()[k], v) for k, v in tl.state_dict().items() if not k.startswith("classifier."))
    plain, _, _ = initial_model("tiny-test", str(tmp / "with-lite.safetensors"))
    assert not isinstance(plain, TinyTLBackbone) and not any(k.startswith("lite.") for k in plain.state_dict())


def test_distill_leaves_denormals_alone_afterwards(setup, capsys):
    """Distillation flushes denormals to zero while it runs; the flag is process-wide, so it must be off
    again afterwards (it once stayed on and broke the float arithmetic of everything that ran next)."""
    import math
    torch.set_flush_denormal(False)
    tiny = math.ldexp(1.0, -1060)                 # a float64 subnormal
    assert torch.tensor([tiny], dtype=torch.float64).item() > 0
    tmp, args = setup
    assert main(args + ["--out", str(tmp / "run"), "--max-steps", "1"]) == 0
    assert torch.tensor([tiny], dtype=torch.float64).item() > 0
