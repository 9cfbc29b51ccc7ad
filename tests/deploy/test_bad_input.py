"""Bad and unusual input on the user's path, every file generated here.

For each bad input and each command that reads it: exit status 2, no traceback (main() returns instead
of raising), one `tinytrain CMD: error:` line that names the file or flag, and nothing left behind.
Unusual but valid input (16-bit, transparent, macOS `._` files, a checkpoint's own resolution) must
give the right result.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tinytrain.cli import main
from tinytrain.deploy.adapted import load_adapted
from tinytrain.deploy.images import load_images, open_rgb
from tinytrain.models.backbone import build_backbone
from tinytrain.models.weights import save_checkpoint

from .conftest import write_folder

TINY = ["--model", "tiny-test", "--checkpoint", "random", "--resolution", "32"]


# --- helpers -------------------------------------------------------------------------------------------

def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its content (None for folders), to prove nothing changed."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def fails(capsys, root: Path, argv: list[str], *names) -> str:
    """Exit 2, one error line naming each of `names`, no traceback, and nothing under `root` changed."""
    before = tree(root)
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:       # argparse's own checks (a flag's type) exit while reading the command line
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "weights_only" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    # the command that ran names the error: `tinytrain adapt`, or a sub-command such as `tinytrain data episodes`
    sub = f" {argv[1]}" if len(argv) > 1 and not str(argv[1]).startswith("-") else ""
    assert len(lines) == 1 and lines[0].startswith((f"tinytrain {argv[0]}{sub}: error: ",
                                                    f"tinytrain {argv[0]}: error: ")), err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    assert tree(root) == before, "a failed command left something behind"
    return lines[0]


def ok(capsys, argv: list[str]) -> tuple[str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, (code, out, err)
    return out, err


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height (a decompression bomb's header) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG written byte by byte (Pillow writes 16-bit greyscale but not 16-bit RGB)."""
    h, w = array.shape[:2]
    colour = 0 if array.ndim == 2 else {2: 4, 3: 2, 4: 6}[array.shape[2]]    # PNG colour types
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


class Pickled:      # a pickled object in a .pth file must never be unpickled
    pass


# --- unreadable checkpoints and saved models -------------------------------------------------------------

def bad_checkpoint(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A file given as --checkpoint that is not one -> (path, a word the message must contain)."""
    if kind == "text.safetensors":
        p = tmp_path / "text.safetensors"
        p.write_text("this is a text file, renamed\n")
        return p, "not a readable safetensors file"
    if kind == "text.pth":
        p = tmp_path / "text.pth"
        p.write_text("this is a text file, renamed\n")
        return p, "not a readable PyTorch file"
    if kind == "truncated.safetensors":
        p = save_checkpoint(tmp_path / "full.safetensors", build_backbone("tiny-test"))
        data = p.read_bytes()
        p.unlink()
        p = tmp_path / "truncated.safetensors"
        p.write_bytes(data[:len(data) // 2])
        return p, "truncated"
    if kind == "list.pth":
        p = tmp_path / "list.pth"
        torch.save([torch.zeros(2), torch.ones(2)], p)
        return p, "holds list"
    if kind == "object.pth":
        p = tmp_path / "object.pth"
        torch.save(Pickled(), p)
        return p, "pickled Python objects"
    if kind == "foreign.safetensors":
        p = tmp_path / "foreign.safetensors"
        save_file({"weight": torch.zeros(3)}, str(p))
        return p, "not a tinytrain checkpoint"
    if kind == "directory":
        p = tmp_path / "ckpt_dir"
        p.mkdir()
        return p, "is a directory"
    raise AssertionError(kind)


CHECKPOINT_KINDS = ["text.safetensors", "text.pth", "truncated.safetensors", "list.pth", "object.pth",
                    "foreign.safetensors", "directory"]


@pytest.mark.parametrize("kind", CHECKPOINT_KINDS)
@pytest.mark.parametrize("command", ["adapt", "plan", "eval"])
def test_unreadable_checkpoint(kind, command, support, tmp_path, capsys):
    path, says = bad_checkpoint(tmp_path, kind)
    argv = [command, "--model", "tiny-test", "--checkpoint", path]
    if command == "eval":
        argv += ["--domains", support, "--out", tmp_path / "run"]
    else:
        argv += ["--resolution", "32", "--support", support, "--memory-budget", "64KB"]
    if command == "adapt":
        argv += ["--method", "none", "--save", tmp_path / "out"]
    fails(capsys, tmp_path, argv, path, says)


def test_adapted_folder_given_as_checkpoint_points_inside(saved, support, tmp_path, capsys):
    fails(capsys, tmp_path, ["adapt", "--model", "tiny-test", "--checkpoint", saved, "--support", support,
                             "--method", "none"], saved / "model.safetensors")


def damage(saved: Path, kind: str) -> tuple[Path, str]:
    """Break a saved model directory -> (the file to name, a word the message must contain)."""
    if kind == "model_truncated":
        p = saved / "model.safetensors"
        p.write_bytes(p.read_bytes()[:100])
        return p, "truncated"
    if kind == "model_text":
        p = saved / "model.safetensors"
        p.write_text("not a model")
        return p, "not a readable safetensors file"
    if kind == "head_missing":
        (saved / "head.safetensors").unlink()
        return Path("head.safetensors"), "incomplete"
    if kind == "head_truncated":
        p = saved / "head.safetensors"
        p.write_bytes(p.read_bytes()[:40])
        return p, "truncated"
    if kind == "meta_broken":
        (saved / "adapted.json").write_text("{ not json")
        return saved, "not a saved tinytrain model"
    if kind == "not_a_folder":
        shutil.rmtree(saved)
        saved.write_text("a file")
        return saved, "is a file"
    if kind == "missing":
        shutil.rmtree(saved)
        return saved, "does not exist"
    raise AssertionError(kind)


SAVED_KINDS = ["model_truncated", "model_text", "head_missing", "head_truncated", "meta_broken", "not_a_folder",
               "missing"]


@pytest.mark.parametrize("kind", SAVED_KINDS)
@pytest.mark.parametrize("command", ["predict", "export"])
def test_damaged_saved_model(kind, command, saved, support, tmp_path, capsys):
    name, says = damage(saved, kind)
    if command == "predict":
        argv = ["predict", "--model-dir", saved, support / "red" / "0.png"]
    else:
        argv = ["export", "--model-dir", saved, "--format", "torchscript", "--out", tmp_path / "m.pt"]
    fails(capsys, tmp_path, argv, name, says)


# --- output paths: checked before any work, nothing half-written, nothing overwritten silently ---------------

def test_save_under_a_regular_file(support, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--method", "none",
                             "--save", tmp_path / "file.txt" / "model"], "file.txt", "--save")


def test_save_refuses_an_existing_model_without_overwrite(saved, support, tmp_path, capsys):
    before = tree(saved)
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--method", "lastlayer", "--iterations", "1",
                             "--save", saved], saved, "--overwrite")
    assert tree(saved) == before
    ok(capsys, ["adapt", *TINY, "--support", support, "--method", "lastlayer", "--iterations", "1",
                "--save", saved, "--overwrite"])
    assert load_adapted(saved).method == "lastlayer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved", "support"]   # no temporary folders left


@pytest.mark.parametrize("case", ["under_file", "existing_dir", "existing_file", "sidecar_is_dir", "unwritable"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_output_paths(case, fmt, saved, tmp_path, capsys):
    out = tmp_path / "exported" / "model.bin"
    out.parent.mkdir()
    says = "--out"
    if case == "under_file":
        (tmp_path / "file.txt").write_text("x")
        out = tmp_path / "file.txt" / "model.bin"
        says = "file.txt"
    elif case == "existing_dir":
        out.mkdir()
        says = "is an existing directory"
    elif case == "existing_file":
        out.write_bytes(b"keep me")
        says = "--overwrite"
    elif case == "sidecar_is_dir":
        (out.parent / "model.bin.json").mkdir()
        says = "model.bin.json"
    else:
        if os.geteuid() == 0:           # root writes anywhere a mode allows; /sys refuses even root
            out = Path("/sys/tinytrain-test/model.bin")
        else:
            out.parent.chmod(0o555)
        says = "cannot write"
    try:
        msg = fails(capsys, tmp_path, ["export", "--model-dir", saved, "--format", fmt, "--out", out], says)
    finally:
        (tmp_path / "exported").chmod(0o755)
    assert ".tmp" not in msg


def test_export_overwrite_replaces_file_and_leaves_no_temporary(saved, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "model.pt"
    ok(capsys, ["export", "--model-dir", saved, "--format", "torchscript", "--out", out])
    first = out.read_bytes()
    out.write_bytes(b"old")
    ok(capsys, ["export", "--model-dir", saved, "--format", "torchscript", "--out", out, "--overwrite"])
    assert out.read_bytes() == first or len(out.read_bytes()) > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.pt", "model.pt.json"]


def test_failed_export_removes_what_it_made(saved, tmp_path, monkeypatch, capsys):
    """A failure while writing (here: the disk, while tracing) leaves neither the temporary file nor new folders."""
    def broken(*args, **kwargs):
        raise OSError(28, "simulated failure while tracing")
    monkeypatch.setattr(torch.jit, "trace", broken)
    fails(capsys, tmp_path, ["export", "--model-dir", saved, "--format", "torchscript",
                             "--out", tmp_path / "a" / "b" / "m.pt"], "simulated failure")


def test_episodes_out_paths(support, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    args = ["data", "episodes", support, "--mode", "fixed", "--ways", "2", "--shots", "1", "--queries", "1",
            "--episodes", "2"]
    fails(capsys, tmp_path, [*args, "--out", tmp_path / "file.txt" / "e.json"], "file.txt")
    fails(capsys, tmp_path, [*args, "--out", support], "is an existing directory")
    ok(capsys, [*args, "--out", tmp_path / "e.json"])
    fails(capsys, tmp_path, [*args, "--out", tmp_path / "e.json"], "--overwrite")


# --- images ---------------------------------------------------------------------------------------------------

def test_unreadable_support_image_is_named(support, tmp_path, capsys):
    bad = support / "red" / "broken.png"
    bad.write_text("not an image")
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--method", "none", "--save", tmp_path / "o"], bad)


@pytest.mark.parametrize("command", ["adapt", "plan", "predict"])
def test_decompression_bomb_says_size_and_how_to_allow(command, support, saved, tmp_path, capsys):
    bomb = png_header(support / "red" / "huge.png", 30000, 30000)
    if command == "predict":
        code = main(["predict", "--model-dir", str(saved), str(support / "green"), str(bomb)])
        out, err = capsys.readouterr()
        assert code == 2 and "Traceback" not in err
        assert len(out.splitlines()) == 3              # the readable images are still classified
        assert str(bomb) in err and "30000 x 30000" in err and "TINYTRAIN_MAX_IMAGE_PIXELS" in err
        return
    argv = [command, *TINY, "--support", support, "--memory-budget", "64KB"]
    fails(capsys, tmp_path, argv, bomb, "30000 x 30000", "TINYTRAIN_MAX_IMAGE_PIXELS")


def test_pixel_limit_is_adjustable(support, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYTRAIN_MAX_IMAGE_PIXELS", "1000")    # the images are 36x48 = 1728 pixels at most
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--method", "none"], "TINYTRAIN_MAX_IMAGE_PIXELS")
    monkeypatch.setenv("TINYTRAIN_MAX_IMAGE_PIXELS", "none")
    ok(capsys, ["adapt", *TINY, "--support", support, "--method", "none"])


def test_predict_reports_an_unreadable_file_and_classifies_the_rest(saved, support, tmp_path, capsys):
    bad = support / "red" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    code = main(["predict", "--model-dir", str(saved), str(support), "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    results = json.loads(out)
    assert len(results) == 9 and str(bad) not in {r["image"] for r in results}
    assert f"tinytrain predict: error: cannot read image {bad}" in err and "1 of 10 images" in err


def test_predict_unmatched_glob_and_missing_files(saved, tmp_path, capsys):
    pattern = str(tmp_path / "photos" / "*.jpg")
    fails(capsys, tmp_path, ["predict", "--model-dir", saved, pattern], pattern, "no file matches")
    fails(capsys, tmp_path, ["predict", "--model-dir", saved, tmp_path / "nope.png"], "nope.png", "does not exist")
    (tmp_path / "empty").mkdir()
    fails(capsys, tmp_path, ["predict", "--model-dir", saved, tmp_path / "empty"], "no images found")


def test_macos_metadata_files_are_skipped_and_counted(saved, support, tmp_path, capsys):
    for cls in ("red", "green"):
        (support / cls / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    out, _ = ok(capsys, ["adapt", *TINY, "--support", support, "--method", "none", "--json"])
    s = json.loads(out)
    assert s["support_images"] == 9 and s["ignored_metadata_files"] == 2
    out, err = ok(capsys, ["predict", "--model-dir", saved, support / "red"])
    assert len(out.splitlines()) == 3 and "1 macOS '._' metadata files ignored" in err
    out, _ = ok(capsys, ["data", "stats", support, "--mode", "fixed", "--ways", "2", "--shots", "1",
                         "--queries", "1", "--episodes", "2", "--json"])
    assert json.loads(out)["ignored_metadata_files"] == 2 and json.loads(out)["n_images"] == 9


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 8).reshape(8, 64) * 128).astype(np.uint16)       # 0 .. 65408
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    want = np.rint(ramp / 257).astype(np.uint8)
    got = np.asarray(open_rgb(tmp_path / "grey16.png"))
    assert got.shape == (8, 64, 3) and np.abs(got[..., 0].astype(int) - want).max() <= 1
    assert 100 < got.mean() < 155                       # was all white (255) when I;16 was clipped

    rgb = np.zeros((4, 4, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32896, 1028
    assert np.asarray(open_rgb(png16(tmp_path / "rgb16.png", rgb)))[0, 0].tolist() == [255, 128, 4]

    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "grey16be.tif", ramp, byteorder=">")
    assert np.abs(np.asarray(open_rgb(tmp_path / "grey16be.tif"))[..., 1].astype(int) - want).max() <= 1


def test_transparent_background_is_white_unless_asked(support, tmp_path, capsys):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (200, 40, 40, 255)              # an opaque red square on a transparent background
    Image.fromarray(rgba, "RGBA").save(tmp_path / "icon.png")
    flat = np.full((40, 40, 3), 255, np.uint8)
    flat[10:30, 10:30] = (200, 40, 40)
    Image.fromarray(flat).save(tmp_path / "on_white.png")
    x, _ = load_images([tmp_path / "icon.png", tmp_path / "on_white.png"], 32)
    torch.testing.assert_close(x[0], x[1])
    assert np.asarray(open_rgb(tmp_path / "icon.png", (0, 0, 0)))[0, 0].tolist() == [0, 0, 0]
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.save(tmp_path / "pal.png", transparency=0)
    assert np.asarray(open_rgb(tmp_path / "pal.png"))[0, 0].tolist() == [255, 255, 255]
    # the saved model remembers the background, and predict uses it
    shutil.copy(tmp_path / "icon.png", support / "red" / "icon.png")
    out, _ = ok(capsys, ["adapt", *TINY, "--support", support, "--method", "none", "--background", "0,0,0",
                         "--save", tmp_path / "m"])
    assert load_adapted(tmp_path / "m").background == (0, 0, 0)
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--background", "purple"], "--background")


# --- values and flags --------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, names", [
    (["--lr", "0"], ["--lr"]), (["--lr", "nan"], ["--lr"]), (["--lr", "-1e-3"], ["--lr"]),
    (["--memory-budget", "-5MB"], ["--memory-budget", "-5MB"]), (["--compute-budget", "-15%"], ["--compute-budget"]),
    (["--memory-budget", "5XB"], ["5XB"]), (["--resolution", "4"], ["--resolution"]),
    (["--iterations", "-1"], ["--iterations"]), (["--device", "toaster"], ["toaster"]),
    (["--method", "magic"], ["magic"]),
])
def test_bad_values_name_the_flag(argv, names, support, tmp_path, capsys):
    base = ["adapt", "--model", "tiny-test", "--checkpoint", "random", "--support", support,
            "--save", tmp_path / "out"]
    if "--resolution" not in argv:
        base += ["--resolution", "32"]
    fails(capsys, tmp_path, base + argv, *names)


def test_support_folder_errors(support, tmp_path, capsys):
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", tmp_path / "nope"], "nope", "does not exist")
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support / "red" / "0.png"], "0.png", "is a file")
    fails(capsys, tmp_path, ["predict", "--model-dir", support, support / "red" / "0.png"],
          "not a saved tinytrain model")


def test_query_folder_errors_name_the_query_flag(support, tmp_path, capsys):
    """Each problem of --query is one line naming --query and the folder, found before the model is loaded
    (the checkpoint named here does not exist: it is never reached)."""
    base = ["adapt", "--model", "tiny-test", "--checkpoint", tmp_path / "never-read.safetensors", "--support", support,
            "--save", tmp_path / "out", "--query"]
    empty = tmp_path / "q-empty"
    empty.mkdir()
    fails(capsys, tmp_path, [*base, empty], f"--query {empty}", "no class sub-folders")
    flat = tmp_path / "q-flat"
    flat.mkdir()
    shutil.copy(support / "red" / "0.png", flat / "a.png")
    shutil.copy(support / "red" / "1.png", flat / "b.png")
    fails(capsys, tmp_path, [*base, flat], f"--query {flat}", "holds 2 images directly")
    fails(capsys, tmp_path, [*base, tmp_path / "q-none"], "--query folder", "q-none", "does not exist")
    fails(capsys, tmp_path, [*base, support / "red" / "0.png"], "--query", "is a file")
    (empty / "red").mkdir()
    fails(capsys, tmp_path, [*base, empty], "class folder", "(in --query)", "holds no images")
    (empty / "red").rmdir()
    stranger = write_folder(tmp_path / "q-other", 1, classes=["red"])
    (stranger / "purple").mkdir()
    shutil.copy(support / "red" / "0.png", stranger / "purple" / "0.png")
    fails(capsys, tmp_path, [*base, stranger], "--query", "['purple'] are not in the support set (--support")


def test_a_single_class_support_folder_is_named_before_the_model_is_loaded(support, tmp_path, capsys):
    one = write_folder(tmp_path / "one", 2, classes=["red"])
    fails(capsys, tmp_path, ["adapt", "--model", "tiny-test", "--checkpoint", tmp_path / "never.safetensors",
                             "--support", one], f"--support {one}", "single class folder ('red')")


def test_divergence_is_refused_and_nothing_saved(support, tmp_path, capsys):
    msg = fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--method", "fulltrain",
                                   "--iterations", "3", "--lr", "100", "--save", tmp_path / "m"], "diverged", "--lr")
    assert "learning rate 100" in msg


def test_a_rate_above_the_limit_is_refused_before_any_work(tmp_path, capsys):
    """--lr 1e30 used to train and then be refused as diverged; it is refused as the command line is read (as
    eval's rates are), naming the limit, before the support folder is even looked at."""
    with pytest.raises(SystemExit) as e:
        main(["adapt", *TINY, "--support", str(tmp_path / "no-such-folder"), "--lr", "1e30"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("tinytrain adapt: error: argument --lr: ") and "up to 100" in err


# --- friction: defaults that follow the checkpoint, applied budgets, text output for every method --------------

def test_resolution_follows_the_checkpoint(support, tmp_path, capsys):
    ck = save_checkpoint(tmp_path / "at40.safetensors", build_backbone("tiny-test"), meta={"resolution": 40})
    out, _ = ok(capsys, ["adapt", "--model", "tiny-test", "--checkpoint", ck, "--support", support,
                         "--method", "none", "--json"])
    s = json.loads(out)
    assert s["resolution"] == 40 and "checkpoint" in s["resolution_from"]
    out, _ = ok(capsys, ["adapt", "--model", "tiny-test", "--checkpoint", "random", "--support", support,
                         "--method", "none"])
    assert "at 128 px (the default; the checkpoint records none)" in out
    out, _ = ok(capsys, ["plan", "--model", "mcunet-5fps", "--device", "pi-zero-2", "--method", "fulltrain",
                         "--checkpoint", "pocket", "--json"])
    assert json.loads(out)["resolution"] == 64          # the shipped pocket checkpoints are trained at 64 px
    out, _ = ok(capsys, ["plan", "--model", "mcunet-5fps", "--device", "pi-zero-2", "--method", "fulltrain",
                         "--json"])
    assert json.loads(out)["resolution"] == 128         # the default (distilled) is trained at 128 px


def test_adapt_reports_the_budgets_it_applied(support, capsys):
    from tinytrain.costs.model import compute_budget_macs
    from tinytrain.models.specs import get_spec
    out, _ = ok(capsys, ["adapt", *TINY, "--support", support, "--method", "tinytrain", "--iterations", "1",
                         "--json"])
    s = json.loads(out)
    assert s["memory_budget_bytes"] == 1024 * 1024          # TinyTrain's default, "around 1 MB"
    assert s["compute_budget_macs"] == compute_budget_macs(get_spec("tiny-test"), 0.15, 32)
    assert "default" in s["budgets_from"]


@pytest.mark.parametrize("method", ["none", "lastlayer", "fulltrain", "tinytl", "sparseupdate", "tinytrain"])
def test_text_summary_for_every_method(method, support, capsys):
    out, _ = ok(capsys, ["adapt", *TINY, "--support", support, "--method", method, "--iterations", "1"])
    assert out.startswith(f"{method} on tiny-test at 32 px")


# --- data stats --------------------------------------------------------------------------------------------

def test_data_stats_messages(support, tmp_path, capsys):
    single = tmp_path / "single"
    shutil.copytree(support / "red", single / "red")
    fails(capsys, tmp_path, ["data", "stats", single], "single class")
    fixed = ["data", "stats", support, "--mode", "fixed", "--episodes", "2"]
    msg = fails(capsys, tmp_path, [*fixed, "--ways", "5", "--shots", "1", "--queries", "1"], "at most 3")
    assert "too small: ;" not in msg
    fails(capsys, tmp_path, [*fixed, "--ways", "2", "--shots", "3", "--queries", "3"], "none of its 3 classes",
          "--shots")
    out, _ = ok(capsys, [*fixed, "--ways", "2", "--shots", "1", "--queries", "1"])
    assert "not decoded" in out and "unreadable skipped" not in out
    (support / "red" / "bad.png").write_text("junk")
    out, _ = ok(capsys, [*fixed, "--ways", "2", "--shots", "1", "--queries", "1", "--verify"])
    assert "1 unreadable skipped" in out


# --- eval on the user's own class folders -------------------------------------------------------------------

def test_eval_on_plain_folders_chooses_lr_on_held_out_episodes_and_says_so(tmp_path, capsys):
    data = write_folder(tmp_path / "mine", 3)
    out_dir = tmp_path / "run"
    argv = ["eval", *TINY, "--domains", data, "--methods", "none,lastlayer", "--tasks", "1", "--iterations", "1",
            "--mode", "fixed", "--ways", "2", "--shots", "2", "--queries", "1", "--workers", "1", "--no-progress",
            "--out", out_dir]
    out, _ = ok(capsys, argv)
    assert "--lr target-val" in out           # held-out episodes of the same folders: works for every episode
    assert json.loads((out_dir / "config.json").read_text())["lr"] == "target-val"


def test_eval_failure_that_recurs_says_so(tmp_path, capsys):
    data = write_folder(tmp_path / "mine", 3)
    code = main([str(a) for a in ["eval", *TINY, "--domains", data, "--methods", "tinytrain", "--tasks", "1",
                                  "--iterations", "1", "--lr", "1e-3", "--memory-budget", "1KB", "--mode", "fixed",
                                  "--ways", "2", "--shots", "2", "--queries", "1", "--workers", "1",
                                  "--no-progress", "--out", tmp_path / "run"]])
    out, err = capsys.readouterr()
    assert code == 2 and "a rerun repeats" in out and "no candidate layer fits" in out
    assert "rerun the same command to retry" not in out


def test_progress_of_the_fisher_pass_and_training(support, capsys):
    """The CLI's bars are fed by these steps (shown when stderr is a terminal)."""
    import tinytrain
    from tinytrain.progress import ProgressBars, report_to
    steps = []
    backbone = tinytrain.load_backbone("tiny-test", "random")
    with report_to(lambda stage, done, total: steps.append((stage, done, total))):
        tinytrain.adapt(backbone, support, method="tinytrain", iterations=3, resolution=32)
    fisher = [s for s in steps if s[0] == "Fisher pass"]
    assert fisher and fisher[-1] == ("Fisher pass", 9, 9)
    assert [s for s in steps if s[0] == "training"] == [("training", i, 3) for i in (1, 2, 3)]
    bars = ProgressBars()
    for stage, done, total in steps:
        bars(stage, done, total)
    bars.close()
    assert "training" in capsys.readouterr().err
