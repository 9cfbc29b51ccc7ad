"""Property tests of image files as users have them: every pixel mode each format stores, EXIF orientations
1-8 (and nonsense ones), any suffix or none (read by content), odd and extreme sizes, truncated files.

The oracle is what an image viewer shows: the picture drawn upright, with the documented pixel ranges
(docs/deploy.md, "Reading images": 16-bit by 65535, 32-bit integers by their largest value, floats 0-1 or
0-255) and transparency over the background. Each file is either listed as an image and read as exactly
that picture (within the format's own loss) as an RGB image and as the model's tensor, by the file path, by
a folder listing and as a PIL image given to the Python API alike, or refused with one line (ValueError)
naming the file; never another exception, never a different picture.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tinytrain.data.datasets import MAX_ASPECT_RATIO, folder_dataset, open_image
from tinytrain.data.folders import IMAGE_EXTENSIONS, list_image_files
from tinytrain.data.transforms import eval_transform
from tinytrain.deploy.images import as_image_batch, load_images, open_rgb

R = 16
WHITE = (255, 255, 255)
SETTINGS = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# format -> (the modes it stores as they are, its suffixes, save options, largest mean/max error per channel)
FORMATS = {
    "PNG": (("1", "L", "LA", "P", "RGB", "RGBA", "I;16"), (".png", ".apng"), {}, (0, 0)),
    "JPEG": (("L", "RGB", "CMYK", "YCbCr"), (".jpg", ".jpeg", ".jpe", ".jfif", ".JPG"), {"quality": 95, "subsampling": 0},
             (12, 255)),
    "WEBP": (("RGB", "RGBA"), (".webp",), {"lossless": True, "exact": True}, (0, 0)),
    "TIFF": (("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "F", "CMYK", "YCbCr"), (".tif", ".tiff", ".TIF"),
             {}, (0, 0)),
    "BMP": (("1", "L", "P", "RGB"), (".bmp", ".dib"), {}, (0, 0)),
    "GIF": (("L", "P", "RGB"), (".gif",), {}, (0, 0)),
    "PPM": (("1", "L", "RGB", "I;16", "F"), (".ppm", ".pnm"), {}, (0, 0)),
    "TGA": (("L", "LA", "P", "RGB", "RGBA"), (".tga",), {}, (0, 0)),
    "QOI": (("RGB", "RGBA"), (".qoi",), {}, (0, 0)),
    "PCX": (("1", "L", "P", "RGB"), (".pcx",), {}, (0, 0)),       # not a suffix tinytrain knows: by content
    "SGI": (("L", "RGB", "RGBA"), (".sgi", ".rgb"), {}, (0, 0)),  # idem
}
ALPHA_MODES = ("LA", "RGBA")
EXIF_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")
# EXIF orientation -> how the camera stores what the viewer shows upright
STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def picture(rng: np.random.Generator, w: int, h: int, alpha: bool) -> np.ndarray:
    """An asymmetric picture of a few flat colours (lossless palettes hold it exactly): h x w x 4 uint8."""
    colours = rng.integers(0, 256, (4, 3))
    bw, bh = max(1, w // 3), max(1, h // 2)
    idx = (np.arange(h)[:, None] // bh * 3 + np.arange(w)[None, :] // bw) % 4
    idx[0, 0] = (idx[0, 0] + 1) % 4            # a marked corner: no flip or turn of it is the same picture
    rgb = colours[idx]
    a = rng.choice([0, 128, 255], size=(h, w)) if alpha else np.full((h, w), 255)
    return np.dstack([rgb, a]).astype(np.uint8)


def grey_of(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb[..., :3].astype(np.uint8)).convert("L"))


def over_white(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(float) / 255
    return np.rint(rgba[..., :3] * a + np.array(WHITE) * (1 - a)).astype(np.uint8)


def encode(mode: str, pic: np.ndarray, scale: str) -> tuple[Image.Image, np.ndarray | None]:
    """The picture in `mode` -> (the image, what a viewer shows as RGB; None where the documented ranges
    refuse the values)."""
    rgba = pic
    if mode == "1":
        bits = grey_of(rgba) > 127
        return Image.fromarray(bits), np.repeat((bits * 255).astype(np.uint8)[..., None], 3, 2)
    if mode in ("L", "LA"):
        g = grey_of(rgba)
        img = Image.fromarray(g)
        if mode == "LA":
            img = Image.merge("LA", (img, Image.fromarray(rgba[..., 3])))
            return img, over_white(np.dstack([g, g, g, rgba[..., 3]]))
        return img, np.dstack([g, g, g])
    if mode in ("RGB", "RGBA"):
        img = Image.fromarray(rgba if mode == "RGBA" else rgba[..., :3].copy(), mode)
        return img, over_white(rgba) if mode == "RGBA" else rgba[..., :3].copy()
    if mode == "P":
        img = Image.fromarray(rgba[..., :3].copy()).quantize(colors=8, method=Image.Quantize.MEDIANCUT)
        shown = np.asarray(img.convert("RGB")).copy()
        if scale == "transparent":      # palette entry 0 is see-through
            img.info["transparency"] = 0
            shown[np.asarray(img) == 0] = WHITE
        return img, shown
    if mode in ("CMYK", "YCbCr"):
        img = Image.fromarray(rgba[..., :3].copy()).convert(mode)
        return img, np.asarray(img.convert("RGB")).copy()
    g = grey_of(rgba).astype(np.float64)
    if mode == "I;16":      # full range, or a dark picture (every value <= 255 of 65535)
        data = g if scale == "dark" else g * 257
        return Image.fromarray(data.astype(np.uint16)), np.repeat(np.rint(data / 257)[..., None], 3, 2).astype(np.uint8)
    if mode == "I":
        if scale == "negative":
            return Image.fromarray((g - 300).astype(np.int32), "I"), None
        if scale == "huge":
            return Image.fromarray((g * 257 + 65536).astype(np.int32), "I"), None
        data = g * 257 if scale == "16bit" else g
        # documented: the largest value decides, up to 255 as 8-bit, else as 16-bit
        shown = data / 257 if data.max() > 255 else data
        return Image.fromarray(data.astype(np.int32), "I"), np.repeat(np.rint(shown)[..., None], 3, 2).astype(np.uint8)
    if mode == "F":
        if scale in ("nan", "negative", "huge"):
            bad = {"nan": np.nan, "negative": -2.0, "huge": 1000.0}[scale]
            data = g.copy()
            data.flat[-1] = bad
            return Image.fromarray(data.astype(np.float32), "F"), None
        data = g / 255 if scale == "unit" else g
        shown = data * 255 if data.max() <= 1 else data      # documented: largest value <= 1 means 0-1
        return Image.fromarray(data.astype(np.float32), "F"), np.repeat(np.rint(shown)[..., None], 3, 2).astype(np.uint8)
    raise AssertionError(mode)


SIZE = st.one_of(st.tuples(st.integers(1, 20), st.integers(1, 20)),
                 st.sampled_from([(1, 1), (1, 100), (100, 1), (2, 200), (1, 101), (101, 1), (3, 400)]))


@st.composite
def image_files(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    modes, suffixes, _, _ = FORMATS[fmt]
    mode = draw(st.sampled_from(modes))
    scale = draw(st.sampled_from({"I": ["8bit", "16bit", "negative", "huge"],
                                  "F": ["unit", "255", "nan", "negative", "huge"], "I;16": ["full", "dark"],
                                  "P": ["opaque", "transparent"] if fmt in ("PNG", "GIF") else ["opaque"]}
                                 .get(mode, ["-"])))
    orientation = draw(st.sampled_from([None, 1, 2, 3, 4, 5, 6, 7, 8, 0, 9]) if fmt in EXIF_FORMATS
                       else st.just(None))
    suffix = draw(st.one_of(st.sampled_from(suffixes), st.sampled_from(["", ".dat", ".png", ".jpg", ".IMG"])))
    return fmt, mode, scale, orientation, suffix, draw(SIZE), draw(st.integers(0, 2 ** 32 - 1))


def save(path: Path, img: Image.Image, fmt: str, orientation: int | None) -> None:
    kwargs = dict(FORMATS[fmt][2])
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    if fmt == "TIFF" and orientation is not None:
        kwargs["tiffinfo"] = {0x0112: orientation}
    img.save(path, format=fmt, **kwargs)


def refused(exc: Exception, path: Path) -> str:
    text = str(exc)
    assert isinstance(exc, ValueError), repr(exc)
    assert str(path) in text and "\n" not in text, text
    return text


@SETTINGS
@given(image_files())
def test_an_image_file_reads_as_the_viewer_shows_it_or_is_refused_naming_it(case):
    fmt, mode, scale, orientation, suffix, (w, h), seed = case
    rng = np.random.default_rng(seed)
    img, shown = encode(mode, picture(rng, w, h, alpha=mode in ALPHA_MODES), scale)
    turn = STORED.get(orientation)
    stored = img.transpose(turn) if turn is not None else img
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "class"
        folder.mkdir()
        path = folder / f"photo{suffix}"
        save(path, stored, fmt, orientation)
        # what a viewer shows: upright only where the file kept the tag
        with Image.open(path) as check:
            kept = check.getexif().get(0x0112)
            assert check.format == fmt
        if kept not in STORED:
            shown = np.asarray(Image.fromarray(shown).transpose(turn)) if turn is not None else shown

        listing = list_image_files(folder)
        assert listing.images == [path] and not listing.skipped, (listing, path)   # by content, any suffix

        long, short = max(w, h), min(w, h)
        try:
            got = open_rgb(path)
        except Exception as exc:
            text = refused(exc, path)
            if long > MAX_ASPECT_RATIO * short:
                assert f"{w} x {h} pixels" in text or f"{h} x {w} pixels" in text, text   # upright or as stored
                assert "times longer" in text
            else:
                assert shown is None, f"{fmt} {mode} {scale} refused: {text}"
                assert "pixel values" in text or "NaN" in text, text
            with pytest.raises(ValueError, match="photo"):
                load_images([path], R)
            return
        assert long <= MAX_ASPECT_RATIO * short, "an extreme strip was read"
        assert shown is not None, f"{fmt} {mode} {scale}: values outside the documented ranges were read"
        assert got.mode == "RGB" and got.size == (shown.shape[1], shown.shape[0]), (got.size, shown.shape)
        diff = np.abs(np.asarray(got).astype(int) - shown.astype(int))
        mean_tol, max_tol = FORMATS[fmt][3]
        assert diff.mean() <= mean_tol + 1 and diff.max() <= max_tol + 2, (fmt, mode, orientation, diff.max())

        # the model's input: the same pixels through the eval transform, from a path and from a PIL image
        x, sizes = load_images([path], R)
        assert x.shape == (1, 3, R, R) and torch.isfinite(x).all() and sizes == {got.size}
        assert torch.equal(x[0], eval_transform(R)(got))
        with Image.open(path) as opened:
            y, _ = as_image_batch([opened], R)
        assert torch.equal(x, y)
        # the data area's class-folder reader (eval, data stats) sees the same picture
        assert np.array_equal(np.asarray(folder_dataset(folder.parent).load(0, 0)), np.asarray(got))


@settings(max_examples=60, deadline=None, database=None)
@given(st.sampled_from([("PNG", "RGB"), ("PNG", "I;16"), ("JPEG", "RGB"), ("WEBP", "RGBA"), ("TIFF", "F"),
                        ("TIFF", "RGB"), ("BMP", "RGB"), ("GIF", "P"), ("PPM", "RGB"), ("TGA", "RGBA"),
                        ("QOI", "RGB")]),
       st.floats(0.05, 0.95), st.sampled_from(["", ".img"]), st.integers(0, 2 ** 32 - 1))
def test_a_truncated_image_file_is_refused_naming_it_or_read_whole(fmt_mode, keep, suffix, seed):
    """A file cut short (an interrupted copy): never half a picture padded with grey, never another
    exception; where only trailing metadata was lost, the picture is read whole."""
    fmt, mode = fmt_mode
    img, shown = encode(mode, picture(np.random.default_rng(seed), 12, 9, alpha=mode in ALPHA_MODES), "unit")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **FORMATS[fmt][2])
    data = buf.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"cut.{fmt.lower()}{suffix}" if suffix else Path(tmp) / f"cut{FORMATS[fmt][1][0]}"
        path.write_bytes(data[: max(1, int(len(data) * keep))])
        listing = list_image_files(path.parent)
        if path not in listing.images:            # not even a header: skipped, and the reason said
            assert [p for p, _ in listing.skipped] == [path]
            return
        try:
            got = open_rgb(path)
        except Exception as exc:
            refused(exc, path)
            return
        diff = np.abs(np.asarray(got).astype(int) - shown.astype(int))
        assert got.size == (12, 9) and diff.mean() <= FORMATS[fmt][3][0] + 1, f"{fmt}: a cut file read as another picture"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_listed_suffix_of_every_format_is_an_image_suffix_or_read_by_content(fmt, tmp_path):
    """The suffix table and reading by content together take every format above (pcx and sgi by content)."""
    for suffix in FORMATS[fmt][1]:
        path = tmp_path / f"a{suffix}"
        Image.new("RGB", (4, 3), (10, 200, 30)).convert(FORMATS[fmt][0][-1] if fmt != "PPM" else "RGB").save(
            path, format=fmt, **FORMATS[fmt][2])
        assert suffix.lower() in IMAGE_EXTENSIONS or fmt in ("PCX", "SGI"), suffix
    assert set(list_image_files(tmp_path).images) == set(tmp_path.iterdir())
    for p in tmp_path.iterdir():
        assert open_image(p).mode in ("RGB", "L")
