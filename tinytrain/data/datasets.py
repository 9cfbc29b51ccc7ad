"""Image datasets as `class -> items`, the one shape every reader produces and the sampler consumes.

Two storage kinds cover everything: `FileDataset` (one image file per item, optionally a crop box:
class-per-folder data and the Meta-Dataset sources) and `ArrayDataset` (decoded uint8 arrays in memory
or memory-mapped: the pocket benchmark and QuickDraw), so that loading stays fast where it matters.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .folders import NOT_AN_IMAGE, read_class_folders
from ..errors import BadInput

WHITE = (255, 255, 255)
# Pillow's own guard against decompression bombs (about 89 Mpixels); TINYTRAIN_MAX_IMAGE_PIXELS overrides it.
MAX_PIXELS_ENV = "TINYTRAIN_MAX_IMAGE_PIXELS"
# The longer side may be at most this many times the shorter one: the centre crop of a 30000 x 1 strip is a
# one-pixel sliver, and resizing its shorter side to the resolution first would take gigabytes.
MAX_ASPECT_RATIO = 100
EXIF_ORIENTATION = 0x0112

Box = tuple[float, float, float, float]
Item = "str | tuple[str, Box]"


class ImageDataset:
    """Base class: `classes[i]` has `class_sizes()[i]` images, loaded as RGB PIL images by `load(i, j)`.

    `groups[i]`, when not None, is the superclass of class i (e.g. the Omniglot alphabet); `group_names`
    names them. Subclasses implement `class_sizes` and `_load`.
    """

    name: str
    classes: list[str]
    groups: list[int] | None = None
    group_names: list[str] | None = None

    def class_sizes(self) -> list[int]:
        raise NotImplementedError

    @property
    def num_images(self) -> int:
        return int(sum(self.class_sizes()))

    def load(self, class_idx: int, item_idx: int) -> Image.Image:
        size = self.class_sizes()[class_idx]
        if not 0 <= item_idx < size:
            raise IndexError(f"item {item_idx} out of range for class {self.classes[class_idx]!r} ({size} images)")
        return to_rgb(self._load(class_idx, item_idx))

    def _load(self, class_idx: int, item_idx: int) -> Image.Image:
        raise NotImplementedError

    def subset(self, class_indices: Sequence[int], name: str | None = None) -> "ImageDataset":
        """A view over some classes (e.g. one Meta-Dataset split), keeping groups."""
        return SubsetDataset(self, list(class_indices), name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self.classes)} classes, {self.num_images} images)"


class SubsetDataset(ImageDataset):
    def __init__(self, base: ImageDataset, class_indices: list[int], name: str | None = None):
        self.base, self.index = base, class_indices
        self.name = name or base.name
        self.classes = [base.classes[i] for i in class_indices]
        if base.groups is not None:
            used = sorted({base.groups[i] for i in class_indices})
            remap = {g: k for k, g in enumerate(used)}
            self.groups = [remap[base.groups[i]] for i in class_indices]
            self.group_names = [base.group_names[g] for g in used] if base.group_names else None

    def class_sizes(self) -> list[int]:
        sizes = self.base.class_sizes()
        return [sizes[i] for i in self.index]

    def _load(self, class_idx: int, item_idx: int) -> Image.Image:
        return self.base._load(self.index[class_idx], item_idx)

    @property
    def skipped(self) -> int:
        return getattr(self.base, "skipped", 0)


# --- reading one image file ---------------------------------------------------------------------

class BadImage(BadInput):
    """An image file refused for what it holds; the message names the file and what to change."""


class ImageTooLarge(BadImage):
    """An image over the pixel limit (a possible decompression bomb); the message says how to allow it."""


def max_image_pixels() -> int | None:
    """The largest image (width x height) read: $TINYTRAIN_MAX_IMAGE_PIXELS ('0' or 'none': no limit),
    else Pillow's MAX_IMAGE_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return Image.MAX_IMAGE_PIXELS
    if raw.strip().lower() in ("0", "none"):
        return None
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        raise BadInput(f"{MAX_PIXELS_ENV}={raw!r} is not a number of pixels; set e.g. "
                         f"{MAX_PIXELS_ENV}=200000000, or 'none' for no limit") from None
    if value < 0:
        raise BadInput(f"{MAX_PIXELS_ENV} must be positive (got {raw!r}); 'none' removes the limit")
    return value


def check_image_shape(width: int, height: int, what: str) -> None:
    """Refuse an empty image, or one more than MAX_ASPECT_RATIO times longer than wide (before decoding)."""
    if width < 1 or height < 1:
        raise BadImage(f"{what} is {width} x {height} pixels, an empty image; remove it")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise BadImage(f"{what} is {width} x {height} pixels, more than {MAX_ASPECT_RATIO} times longer than it is "
                       f"wide (the centre crop would keep a {min(width, height)}-pixel sliver of it); crop it nearer "
                       "to square")


def open_image(path: str | Path, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Decode one image file to an upright 8-bit "RGB" or "L" image (see `to_8bit`): the one place
    image files are opened.

    The pixel limit and the aspect ratio are checked on the header, before anything is decoded, and
    the error names the file and its size; Pillow's own limit is lifted only for that header read.
    """
    limit = max_image_pixels()
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    with img:
        w, h = img.size
        if limit is not None and w * h > limit:
            raise ImageTooLarge(f"image {path} is {w} x {h} = {w * h:,} pixels, over the limit of {limit:,} that "
                                f"guards against decompression bombs; shrink it, or if you trust the file set "
                                f"{MAX_PIXELS_ENV}={w * h} (or 'none')")
        check_image_shape(w, h, f"image {path}")
        decode_tiff_at_stored_size(img)
        img.load()
        return to_8bit(img, background, what=f"image {path}")


def decode_tiff_at_stored_size(img: Image.Image) -> None:
    """Before an unloaded TIFF is decoded: Pillow (13.0) reports a TIFF whose orientation tag turns it by 90
    degrees (5-8) at its upright size, decodes an uncompressed one into a buffer of that size (scrambling its
    rows) and then turns it; decoded at the stored size, as it does for compressed ones, the turn is right.
    Pillow applies a TIFF's orientation itself when it loads it, and removes the tag."""
    stored = getattr(img, "_tile_size", None)
    if getattr(img, "format", None) == "TIFF" and img.tile and stored and tuple(img.size) != tuple(stored):
        img._size = tuple(stored)


def upright(img: Image.Image) -> Image.Image:
    """The image as viewers show it: its EXIF (or XMP) orientation applied, the tag removed so that it is
    never applied twice. Phone cameras store photos sideways and set this tag."""
    decode_tiff_at_stored_size(img)
    img.load()      # a TIFF applies its own orientation tag when it is loaded (and removes it)
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:        # a damaged EXIF block: Pillow raises many kinds; viewers show such files as stored
        return img
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return img
    return ImageOps.exif_transpose(img)


def _pixel_range_error(what: str, kind: str, lo: float, hi: float, accepted: str) -> BadImage:
    return BadImage(f"{what} holds {kind} pixel values from {lo:g} to {hi:g}; tinytrain reads {kind} images as "
                    f"{accepted}; rescale it to one of those or save it as an 8-bit PNG")


# Formats whose "I" images are always 16-bit data: Pillow reads a PGM/PPM with a maxval above 255 as mode I,
# scaled to 0..65535 by that maxval, so a dark 16-bit PGM (every value <= 255) is dark, not full-range 8-bit.
SIXTEEN_BIT_I_FORMATS = ("PPM",)


def _greyscale_to_8bit(img: Image.Image, what: str, fmt: str | None = None) -> Image.Image:
    """Modes I;16*, I and F -> "L", by the documented ranges (docs/deploy.md, "Reading images").

    I;16*, and I read from a 16-bit PGM/PPM (`fmt` in SIXTEEN_BIT_I_FORMATS): the range 0..65535 (divided by
    257). Other I (32-bit integer): by the largest value, 0..255
    taken as is, up to 65535 as 16-bit; anything else, or a negative value, is refused. F (32-bit float):
    largest value <= 1: 0..1; <= 255: 0..255; NaN, infinite, negative or larger values are refused."""
    mode = img.mode
    a = np.asarray(img, dtype=np.float64)
    if mode == "F":
        if not np.isfinite(a).all():
            raise BadImage(f"{what} holds NaN or infinite float pixel values; replace them (e.g. with 0) or save it "
                           "as an 8-bit PNG")
        lo, hi = float(a.min()), float(a.max())
        scale = 255.0 if hi <= 1.0 + 1e-6 else 1.0
        if lo * scale < -0.5 or hi * scale > 255.5:
            raise _pixel_range_error(what, "32-bit float", lo, hi, "0-1 (largest value <= 1) or 0-255")
        a = a * scale
    elif mode.startswith("I;16"):
        if a.size and a.min() < 0:
            raise _pixel_range_error(what, "signed 16-bit", float(a.min()), float(a.max()), "0-65535")
        a = a / 257.0
    else:       # "I": 32-bit signed integers
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0 or hi > 65535:
            raise _pixel_range_error(what, "32-bit integer", lo, hi,
                                     "0-255 (largest value <= 255) or 0-65535")
        if hi > 255 or fmt in SIXTEEN_BIT_I_FORMATS:
            a = a / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def to_8bit(img: Image.Image, background: tuple[int, int, int] = WHITE, what: str = "a PIL image") -> Image.Image:
    """Any Pillow mode -> an upright "L" or "RGB" image with 8 bits per channel, scaled rather than clipped.

    The EXIF orientation is applied first (`upright`). 16-bit greyscale (I;16*), 32-bit integer ("I") and
    float ("F") images are scaled by the ranges `_greyscale_to_8bit` documents, and values outside them
    are refused (BadImage naming `what`). Pillow already reduces 16-bit RGB(A) PNG/TIFF to 8 bits.
    Transparent pixels (RGBA, LA, PA, palette or greyscale with a transparency key) are composited onto
    `background` (white by default, as image viewers show them), so a transparent background never
    turns black.
    """
    fmt = getattr(img, "format", None)      # the file's format (a turned copy no longer has it)
    img = upright(img)
    mode = img.mode
    if mode in ("RGB", "L"):
        if "transparency" not in img.info:
            return img.copy()
    if mode.startswith("I") or mode == "F":
        return _greyscale_to_8bit(img, what, fmt)
    try:
        if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
            return Image.alpha_composite(base, rgba).convert("RGB")
        return img.convert("L" if mode == "1" else "RGB")
    except ValueError as exc:
        raise BadImage(f"{what} has pixel mode {mode}, which Pillow cannot convert to RGB ({exc}); save it as an "
                       "8-bit RGB PNG or JPEG") from None


def to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE, what: str = "a PIL image") -> Image.Image:
    """`to_8bit`, then greyscale expanded to RGB."""
    return to_8bit(img, background, what).convert("RGB")


def read_image(path: str | Path, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """`open_image`, with the one error for a file that cannot be read: a ValueError naming the file and
    what to do. (BadImage, for what a decodable file holds, passes through as it is.)"""
    try:
        return open_image(path, background)
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, UnidentifiedImageError):
            why = "an empty file" if _is_empty(path) else NOT_AN_IMAGE
        else:
            why = str(exc) or type(exc).__name__
        raise BadInput(f"cannot read image {path}: {why}; remove it or convert it to PNG/JPEG") from None


def _is_empty(path: str | Path) -> bool:
    try:
        return Path(path).stat().st_size == 0
    except OSError:
        return False


def open_rgb(path: str | Path, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Open one image as upright 8-bit RGB (EXIF orientation applied, 16-bit and float scaled, transparency
    composited onto `background`), with an error that names the file (`read_image`)."""
    return to_rgb(read_image(path, background), background, what=f"image {path}")


def _open_image(item) -> Image.Image:
    path, box = (item, None) if isinstance(item, str) else item
    img = read_image(path)
    if box is not None:
        img = img.crop(tuple(int(round(v)) for v in box))
    return img


class FileDataset(ImageDataset):
    """One file per item (optionally with a crop box). Unreadable files are skipped and counted.

    A file that fails to decode when loaded is replaced by the next readable item of the same class
    (with a warning), so a long run never dies on one bad file; `verify()` finds them all up front.
    """

    def __init__(self, name: str, classes: list[str], items: list[list], groups: list[int] | None = None,
                 group_names: list[str] | None = None, skipped: int = 0):
        if len(classes) != len(items):
            raise BadInput("classes and items must have the same length")
        self.name, self.classes, self.items = name, list(classes), [list(x) for x in items]
        self.groups, self.group_names = groups, group_names
        self.skipped = skipped
        _check_nonempty(self)

    def class_sizes(self) -> list[int]:
        return [len(x) for x in self.items]

    def _load(self, class_idx: int, item_idx: int) -> Image.Image:
        items = self.items[class_idx]
        for k in range(len(items)):
            item = items[(item_idx + k) % len(items)]
            try:
                return _open_image(item)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
                self.skipped += 1
                warnings.warn(f"{exc} (skipped: the next image of class {self.classes[class_idx]!r} is used)")
        raise BadInput(f"class {self.classes[class_idx]!r} of {self.name} has no readable image; "
                         "remove the class folder or replace its files")

    def verify(self, progress: bool = False) -> int:
        """Decode every file once; drop the unreadable ones. Returns how many were dropped."""
        from tqdm import tqdm
        dropped = 0
        bar = tqdm(total=self.num_images, desc=f"verify {self.name}", disable=not progress, unit="img")
        for c, items in enumerate(self.items):
            good = []
            for item in items:
                try:
                    _open_image(item)
                    good.append(item)
                except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
                    dropped += 1
                bar.update(1)
            self.items[c] = good
        bar.close()
        self.skipped += dropped
        _check_nonempty(self)
        return dropped


class ArrayDataset(ImageDataset):
    """Decoded uint8 images, one array per class of shape (N, H, W) or (N, H, W, 3); may be memory-mapped.

    `transform_item`, if given, maps one raw array row to a 2-D or 3-D uint8 array (e.g. QuickDraw's
    flat 784-vectors to 28x28).
    """

    def __init__(self, name: str, classes: list[str], arrays: list[np.ndarray], groups: list[int] | None = None,
                 group_names: list[str] | None = None,
                 transform_item: Callable[[np.ndarray], np.ndarray] | None = None):
        if len(classes) != len(arrays):
            raise BadInput("classes and arrays must have the same length")
        self.name, self.classes, self.arrays = name, list(classes), list(arrays)
        self.groups, self.group_names = groups, group_names
        self.transform_item = transform_item
        self.skipped = 0
        _check_nonempty(self)

    def class_sizes(self) -> list[int]:
        return [int(a.shape[0]) for a in self.arrays]

    def _load(self, class_idx: int, item_idx: int) -> Image.Image:
        a = np.asarray(self.arrays[class_idx][item_idx])
        if self.transform_item is not None:
            a = self.transform_item(a)
        return Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8))


def _check_nonempty(ds: ImageDataset) -> None:
    if not ds.classes:
        raise BadInput(f"dataset {ds.name!r} has no classes; expected ROOT/<class>/<image> folders")
    empty = [c for c, n in zip(ds.classes, ds.class_sizes()) if n == 0]
    if empty:
        shown = ", ".join(repr(c) for c in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise BadInput(f"{len(empty)} class(es) of {ds.name!r} have no readable images: {shown}; "
                         "add images or remove those classes")


def folder_dataset(root: str | Path, name: str | None = None, verify: bool = False) -> FileDataset:
    """Read ROOT/<class>/<image> with the one class-folder reader (`tinytrain.data.folders.read_class_folders`:
    classes sorted by name, every file Pillow reads directly in a class folder, an error naming a class folder
    that holds no image).

    As a dataset skips unreadable images and counts them, empty image files are skipped and counted
    (`skipped`) at listing time; `verify=True` also decodes every image. macOS `._NAME` metadata files are
    ignored and counted in `ignored_metadata`; other files that are not read are listed in `not_read` and
    reported (`report_skipped`).
    """
    root = Path(root).expanduser()
    found = read_class_folders(root, what="dataset folder")
    items, skipped = [], 0
    for files in found.images.values():
        kept = [str(f) for f in files if not _is_empty(f)]
        skipped += len(files) - len(kept)
        items.append(kept)
    ds = FileDataset(name or root.name, found.classes, items, skipped=skipped)
    ds.ignored_metadata = found.metadata
    ds.not_read = found.skipped
    if verify:
        ds.verify()
    return ds


class ClassificationView(torch.utils.data.Dataset):
    """All images of the chosen classes as (tensor, label) pairs, label = position in `classes`.

    For supervised pretraining on a source domain; `classes` are class indices (default: all).
    """

    def __init__(self, dataset: ImageDataset, transform: Callable[[Image.Image], torch.Tensor],
                 classes: Sequence[int] | None = None):
        self.dataset, self.transform = dataset, transform
        self.class_indices = list(range(len(dataset.classes))) if classes is None else list(classes)
        sizes = dataset.class_sizes()
        self.index = [(label, c, j) for label, c in enumerate(self.class_indices) for j in range(sizes[c])]

    @property
    def num_classes(self) -> int:
        return len(self.class_indices)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        label, c, j = self.index[i]
        return self.transform(self.dataset.load(c, j)), label
