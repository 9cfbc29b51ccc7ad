"""Images as people have them: phone photos with an EXIF orientation, any file Pillow reads whatever its
suffix, float/32-bit pixels, tensors and PIL images from the Python API, absurd shapes.

Each case: the image is read as a viewer shows it (the same tensor as an upright 8-bit copy), or it is
refused with one line naming the file and what to change (exit 2 from the CLI, ValueError from the
library), and anything skipped is said, with the reason.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinytrain.cli import main
from tinytrain.data import folder_dataset
from tinytrain.deploy.adapted import load_adapted
from tinytrain.deploy.images import (as_image_batch, collect_image_paths, load_class_folder, load_images,
                                     load_images_skipping, open_rgb, parse_background)

from .test_bad_input import TINY, fails, ok, png_header

R = 32


# --- phone photos: EXIF orientation ----------------------------------------------------------------------

def arrow(w: int = 48, h: int = 64) -> Image.Image:
    """An 'up arrow' as the viewer shows it: red top third, white middle, blue bottom, a green stripe on
    the left: no rotation or mirror of it is close to it."""
    a = np.full((h, w, 3), 255, np.uint8)
    a[: h // 3] = (220, 30, 30)
    a[2 * h // 3:] = (30, 30, 220)
    a[:, : w // 6] = (30, 200, 30)
    return Image.fromarray(a)


# EXIF orientation -> how the camera stored the pixels, given what the viewer shows
# (the EXIF 2.3 table: 6 = "rotate 90 CW to view", 5 = transposed, 7 = transversed, ...)
STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def phone_photo(path: Path, orientation: int = 6, fmt: str | None = None) -> Path:
    """The arrow stored sideways with the EXIF tag that makes every viewer show it upright."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = arrow().transpose(STORED[orientation]) if orientation in STORED else arrow()
    stored.save(path, format=fmt, exif=exif, quality=95)
    return path


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 0.15) -> bool:
    """Normalised tensors within JPEG noise of each other (a rotated image is off by > 1)."""
    return float((a - b).abs().mean()) < tol


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied_to_files(orientation, tmp_path):
    p = phone_photo(tmp_path / "IMG_0001.jpg", orientation)
    with Image.open(p) as raw:
        assert raw.getexif()[0x0112] == orientation
        if orientation in (5, 6, 7, 8):
            assert raw.size == (64, 48)                       # stored sideways
    img = open_rgb(p)
    assert img.size == (48, 64)
    a = np.asarray(img).astype(int)
    assert a[2, 30].tolist()[0] > 180 and a[60, 30].tolist()[2] > 180 and a[30, 2].tolist()[1] > 150
    x, sizes = load_images([p], R)
    assert sizes == {(48, 64)}
    upright, _ = as_image_batch([arrow()], R)
    assert close(x[0], upright[0])
    stored_as_is = as_image_batch([arrow().transpose(STORED[orientation])], R)[0]
    assert not close(x[0], stored_as_is[0])


def test_exif_orientation_everywhere_images_are_read(tmp_path):
    """Support and query (class folders), predict (files and folders), PIL images from the API, the data
    area's folder datasets (eval): all see the photo upright, and once only."""
    for cls in ("up", "other"):
        phone_photo(tmp_path / "s" / cls / "a.jpg", 6)
        phone_photo(tmp_path / "s" / cls / "b.jpg", 8)
    want = as_image_batch([arrow()], R)[0][0]
    support = load_class_folder(tmp_path / "s", R)
    assert all(close(x, want) for x in support.x)
    x, kept, errors = load_images_skipping(collect_image_paths([tmp_path / "s"])[0], R)
    assert not errors and len(kept) == 4 and all(close(v, want) for v in x)
    with Image.open(tmp_path / "s" / "up" / "a.jpg") as pil:
        assert close(as_image_batch([pil], R)[0][0], want)
        assert pil.size == (64, 48)                         # the caller's image is left as it was
    ds = folder_dataset(tmp_path / "s")
    from tinytrain.data.transforms import eval_transform
    assert all(close(eval_transform(R)(ds.load(c, j)), want) for c in range(2) for j in range(2))
    assert ds.load(0, 0).size == (48, 64)


def test_exif_orientation_in_png_and_webp(tmp_path):
    for fmt, name in (("PNG", "a.png"), ("WEBP", "a.webp")):
        p = phone_photo(tmp_path / name, 6, fmt)
        assert open_rgb(p).size == (48, 64), fmt


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16"])
@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_tiff_orientation_is_applied_once_and_right(orientation, compression, mode, tmp_path):
    """A TIFF's orientation tag, which Pillow applies itself on loading: an uncompressed greyscale TIFF turned
    by 90 degrees (5-8) came out scrambled (Pillow 13 decoded it into a buffer of the turned size)."""
    p = tmp_path / "scan.tif"
    grey = np.asarray(arrow().convert("L"))
    picture = {"L": Image.fromarray(grey), "RGB": arrow(), "I;16": Image.fromarray(grey.astype(np.uint16) * 257)}[mode]
    picture.transpose(STORED[orientation]).save(p, tiffinfo={0x0112: orientation}, compression=compression)
    want = np.asarray(arrow() if mode == "RGB" else Image.fromarray(grey).convert("RGB"))
    assert np.array_equal(np.asarray(open_rgb(p)), want)
    with Image.open(p) as pil:                           # a PIL image of it given to the Python API
        assert torch.equal(as_image_batch([pil], R)[0], load_images([p], R)[0])


def test_predict_cli_classifies_the_upright_photo(tmp_path, capsys):
    """Adapted on upright arrows vs arrows lying on their side, the phone photo is an up arrow."""
    rng = np.random.default_rng(0)
    for i in range(3):
        jitter = lambda img: Image.fromarray(np.clip(np.asarray(img).astype(int) + rng.integers(-20, 20, (64, 48, 3)),  # noqa: E731
                                                     0, 255).astype(np.uint8))
        up = jitter(arrow())
        up.save((tmp_path / "s" / "up").mkdir(parents=True, exist_ok=True) or tmp_path / "s" / "up" / f"{i}.png")
        (tmp_path / "s" / "sideways").mkdir(parents=True, exist_ok=True)
        jitter(arrow()).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "s" / "sideways" / f"{i}.png")
    ok(capsys, ["adapt", *TINY, "--support", tmp_path / "s", "--method", "none", "--save", tmp_path / "m"])
    photos = [phone_photo(tmp_path / "p" / f"{o}.jpg", o) for o in (6, 8, 3)]
    out, _ = ok(capsys, ["predict", "--model-dir", tmp_path / "m", *photos, "--json"])
    assert [r["label"] for r in json.loads(out)] == ["up", "up", "up"]
    model = load_adapted(tmp_path / "m")
    with Image.open(photos[0]) as pil:
        assert model.predict(pil)[0]["label"] == "up"


# --- every file Pillow reads, whatever its suffix; what is skipped is said ---------------------------

def jpeg(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, (40, 36, 3), dtype=np.uint8)
    Image.fromarray(a).save(path, format="JPEG")
    return path


def mixed_class(d: Path, seed: int = 0) -> list[Path]:
    """1 PNG + 4 JPEGs named as cameras and browsers name them (.jfif, .jpe, .JFIF, no suffix)."""
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(d / "0.png")
    return [d / "0.png"] + [jpeg(d / name, seed + k) for k, name in
                            enumerate(["1.jfif", "2.jpe", "3.JFIF", "download"], 1)]


def test_jfif_and_other_suffixes_are_read_and_non_images_reported(tmp_path, capsys, caplog):
    for k, cls in enumerate(("a", "b", "c")):
        mixed_class(tmp_path / "s" / cls, 10 * k)
    (tmp_path / "s" / "a" / "notes.txt").write_text("taken on holiday\n")
    (tmp_path / "s" / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "s" / "b" / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 32)
    with caplog.at_level(logging.WARNING, logger="tinytrain"):
        out, _ = ok(capsys, ["adapt", *TINY, "--support", tmp_path / "s", "--method", "none", "--json"])
    assert json.loads(out)["support_images"] == 15
    notes = [r.getMessage() for r in caplog.records if r.name == "tinytrain"]
    assert len(notes) == 1
    assert "notes.txt (not an image Pillow can read)" in notes[0] and ".DS_Store (a hidden file)" in notes[0]
    assert "photo.heic" in notes[0] and "pillow-heif" in notes[0]
    # predict FOLDER classifies every readable file, and says what it skipped
    ok(capsys, ["adapt", *TINY, "--support", tmp_path / "s", "--method", "none", "--save", tmp_path / "m"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tinytrain"):
        out, _ = ok(capsys, ["predict", "--model-dir", tmp_path / "m", tmp_path / "s", "--json"])
    assert len(json.loads(out)) == 15
    assert any("notes.txt" in r.getMessage() for r in caplog.records)
    # the data area reads the same files (eval on class folders)
    assert folder_dataset(tmp_path / "s").class_sizes() == [5, 5, 5]


def test_skipped_files_are_reported_on_stderr_by_default(tmp_path):
    """Without logging configured (a plain `tinytrain` run), the note is one line on stderr."""
    mixed_class(tmp_path / "d")
    (tmp_path / "d" / "notes.txt").write_text("hello")
    code = ("from tinytrain.deploy.images import collect_image_paths as c; import sys; "
            f"print(len(c([{str(tmp_path / 'd')!r}])[0]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "5"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinytrain: note: skipped 1 file(s)") and "notes.txt" in lines[0]


def test_a_class_folder_of_non_images_says_what_it_holds(tmp_path, capsys):
    mixed_class(tmp_path / "s" / "a")
    (tmp_path / "s" / "b").mkdir()
    (tmp_path / "s" / "b" / "readme.md").write_text("# photos to come")
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", tmp_path / "s", "--method", "none"],
          tmp_path / "s" / "b", "holds no images", "readme.md (not an image Pillow can read)")
    fails(capsys, tmp_path, ["predict", "--model-dir", tmp_path / "nomodel", tmp_path / "s" / "b"], "nomodel")


def test_a_file_with_an_image_suffix_that_is_not_one_is_still_an_error(tmp_path, support, capsys):
    """A .jpg that does not decode is named (it was meant to be an image), as before."""
    bad = support / "red" / "x.jfif"
    bad.write_text("not a jpeg")
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--method", "none"], bad)


# --- pixel ranges -----------------------------------------------------------------------------------------

def grey_ramp() -> np.ndarray:
    return np.tile(np.linspace(0, 255, 40), (30, 1))           # 30 x 40, 0..255


def as_grey(path: Path) -> np.ndarray:
    return np.asarray(open_rgb(path))[..., 0].astype(int)


@pytest.mark.parametrize("scale", [1.0, 1 / 255])
def test_float_tiff_in_0_255_or_0_1(scale, tmp_path):
    ramp = grey_ramp()
    Image.fromarray((ramp * scale).astype(np.float32), "F").save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert np.abs(as_grey(tmp_path / "f.tif") - np.rint(ramp)).max() <= 1     # was all white for 0-255


@pytest.mark.parametrize("values, says", [
    (np.full((8, 8), 1000.0), "0-1 (largest value <= 1) or 0-255"),
    (np.full((8, 8), -3.0), "from -3 to -3"),
    (np.full((8, 8), np.nan), "NaN or infinite"),
    (np.full((8, 8), np.inf), "NaN or infinite"),
])
def test_float_images_outside_the_ranges_are_refused(values, says, tmp_path, support, capsys):
    bad = support / "red" / "float.tif"
    Image.fromarray(values.astype(np.float32), "F").save(bad)
    with pytest.raises(ValueError, match=str(bad)):
        open_rgb(bad)
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--method", "none"], bad, says)


def test_32_bit_integer_images(tmp_path):
    ramp = grey_ramp()
    Image.fromarray(np.rint(ramp).astype(np.int32), "I").save(tmp_path / "i8.tif")      # 0..255 in mode I
    assert Image.open(tmp_path / "i8.tif").mode == "I"
    assert np.abs(as_grey(tmp_path / "i8.tif") - np.rint(ramp)).max() <= 1            # was black (/257)
    Image.fromarray(np.rint(ramp * 257).astype(np.int32), "I").save(tmp_path / "i16.tif")  # 16-bit data in I
    assert np.abs(as_grey(tmp_path / "i16.tif") - np.rint(ramp)).max() <= 1
    Image.fromarray(np.full((8, 8), 70000, np.int32), "I").save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match="big.tif.*32-bit integer.*0-65535"):
        open_rgb(tmp_path / "big.tif")
    Image.fromarray(np.full((8, 8), -5, np.int32), "I").save(tmp_path / "neg.tif")
    with pytest.raises(ValueError, match="neg.tif"):
        open_rgb(tmp_path / "neg.tif")


@pytest.mark.parametrize("fmt, suffix", [("PPM", ".pgm"), ("PNG", ".png"), ("TIFF", ".tif")])
def test_a_dark_16_bit_image_stays_dark(fmt, suffix, tmp_path):
    """16-bit greyscale holding only values up to 255 (of 65535) is nearly black in every viewer; a 16-bit PGM
    (which Pillow reads as 32-bit 'I') was read as full-range 8-bit, i.e. bright."""
    p = tmp_path / f"dark{suffix}"
    Image.fromarray(np.rint(grey_ramp()).astype(np.uint16)).save(p, format=fmt)
    assert as_grey(p).max() <= 1
    Image.fromarray(np.rint(grey_ramp() * 257).astype(np.uint16)).save(p, format=fmt)
    assert np.abs(as_grey(p) - np.rint(grey_ramp())).max() <= 1


@pytest.mark.parametrize("mode", ["F", "I", "I;16", "1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"])
def test_pil_images_of_every_mode(mode):
    """A PIL image of any mode gives the right grey (or a clear error), never white or black by mistake."""
    grey = np.full((40, 40), 100, np.uint8)
    base = Image.fromarray(grey)
    if mode == "F":
        img = Image.fromarray((grey / 255).astype(np.float32), "F")
    elif mode == "I":
        img = Image.fromarray(grey.astype(np.int32), "I")
    elif mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)
        assert img.mode == "I;16"
    elif mode == "1":
        img = Image.fromarray(grey > 50)
        grey = np.full_like(grey, 255)
    else:
        img = base.convert(mode)
    x = as_image_batch([img], R)[0]
    want = as_image_batch([Image.fromarray(grey)], R)[0]
    assert float((x - want).abs().max()) < 0.05, mode


def test_empty_pil_image_is_refused():
    with pytest.raises(ValueError, match="0 x 0 pixels"):
        as_image_batch([Image.new("RGB", (0, 0))], R)


# --- tensors and background colours from the Python API -------------------------------------------------

def test_predict_tensor_conventions(saved, tmp_path):
    model = load_adapted(saved)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 3, R, R), dtype=np.uint8))
    files = []
    for i in range(2):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels[i].permute(1, 2, 0).numpy()).save(files[-1])
    by_file = as_image_batch([str(f) for f in files], R)[0]
    x, names = as_image_batch(pixels, R)                         # uint8: raw pixels 0-255, normalised here
    assert names == [None, None] and torch.allclose(x, by_file, atol=1e-5)
    assert torch.equal(as_image_batch(by_file, R)[0], by_file)  # float: already normalised (unchanged)
    assert [r["label"] for r in model.predict(pixels)] == [r["label"] for r in model.predict([str(f) for f in files])]
    for dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.bool):
        with pytest.raises(ValueError, match=f"got {dtype}.*uint8"):
            model.predict(pixels.to(dtype))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="NaN or infinite"):
            model.predict(torch.full((1, 3, R, R), bad))
    with pytest.raises(ValueError, match="channels first"):
        model.predict(pixels.permute(0, 2, 3, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict(pixels.float() / 255)                      # what the ONNX graph takes: 0-1 pixels
    assert any("normalised" in str(w.message) and "uint8" in str(w.message) for w in caught)
    for top in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top must be an integer"):
            model.predict(pixels, top=top)


@pytest.mark.parametrize("given, want", [
    ((0.5, 0.5, 0.5), (128, 128, 128)), ([1.0, 0, 0], (255, 0, 0)), ((255, 0, 0), (255, 0, 0)),
    ("0.5,0.5,0.5", (128, 128, 128)), ("10, 20, 30", (10, 20, 30)), ("#FF8000", (255, 128, 0)),
    ((np.float32(0.25), 0.0, 1.0), (64, 0, 255)), ((np.int64(7), 8, 9), (7, 8, 9)),
])
def test_background_colours(given, want):
    assert parse_background(given) == want


@pytest.mark.parametrize("given", [(1.5, 0, 0), (300, 0, 0), (-1, 0, 0), (0.5, 0.5), (True, 0, 0),
                                   ("a", 0, 0), "nan,0,0", "#12345", "#GG0000", 128, (float("inf"), 0, 0)])
def test_bad_background_colours_are_refused(given):
    with pytest.raises(ValueError, match="background"):
        parse_background(given)


def test_background_fractions_on_the_command_line(support, tmp_path, capsys):
    ok(capsys, ["adapt", *TINY, "--support", support, "--method", "none", "--background", "0.5,0.5,0.5",
                "--save", tmp_path / "m"])
    assert load_adapted(tmp_path / "m").background == (128, 128, 128)
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--background", "0.5,128,0"], "--background",
          "fractions 0-1")


# --- unbounded: absurd shapes are refused before decoding -------------------------------------------------

@pytest.mark.parametrize("command", ["adapt", "predict"])
def test_a_30000_x_1_strip_is_refused_before_decoding(command, support, saved, tmp_path, capsys):
    strip = png_header(support / "red" / "strip.png", 30000, 1)
    assert strip.stat().st_size < 200
    if command == "predict":
        code = main(["predict", "--model-dir", str(saved), str(support / "red")])
        out, err = capsys.readouterr()
        assert code == 2 and "Traceback" not in err and len(out.splitlines()) == 3
        assert str(strip) in err and "30000 x 1" in err and "crop it" in err
        return
    fails(capsys, tmp_path, ["adapt", *TINY, "--support", support, "--method", "none"], strip, "30000 x 1",
          "crop it nearer to square")


def test_aspect_ratio_limit(tmp_path):
    Image.new("RGB", (1000, 10), (200, 40, 40)).save(tmp_path / "ok.png")          # 100:1 is read
    assert load_images([tmp_path / "ok.png"], R)[0].shape == (1, 3, R, R)
    Image.new("RGB", (10, 1001), (200, 40, 40)).save(tmp_path / "tall.png")
    with pytest.raises(ValueError, match="tall.png is 10 x 1001 pixels"):
        open_rgb(tmp_path / "tall.png")
    with pytest.raises(ValueError, match="PIL image 0 .* 5000 x 2 pixels"):
        as_image_batch([Image.new("RGB", (5000, 2))], R)
    (tmp_path / "c" / "x").mkdir(parents=True)
    (tmp_path / "c" / "x" / "0.png").write_bytes((tmp_path / "ok.png").read_bytes())
    (tmp_path / "c" / "x" / "1.png").write_bytes((tmp_path / "tall.png").read_bytes())
    ds = folder_dataset(tmp_path / "c")
    assert ds.verify() == 1 and ds.class_sizes() == [1]           # eval's reader drops it and counts it
