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
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
WHITE = (255, 255, 255)
# Pillow's own guard against decompression bombs (about 89 Mpixels); TINYTRAIN_MAX_IMAGE_PIXELS overrides it.
MAX_PIXELS_ENV = "TINYTRAIN_MAX_IMAGE_PIXELS"

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

class ImageTooLarge(ValueError):
    """An image over the pixel limit (a possible decompression bomb); the message says how to allow it."""


def is_metadata_file(path: str | Path) -> bool:
    """macOS writes `._NAME` (AppleDouble) files beside copied images on non-Mac disks: not images."""
    return Path(path).name.startswith("._")


def is_image_file(path: Path) -> bool:
    """A file with an image extension that is not a macOS `._` metadata file."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not is_metadata_file(path) and path.is_file()


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
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={raw!r} is not a number of pixels; set e.g. "
                         f"{MAX_PIXELS_ENV}=200000000, or 'none' for no limit") from None
    if value < 0:
        raise ValueError(f"{MAX_PIXELS_ENV} must be positive (got {raw!r}); 'none' removes the limit")
    return value


def open_image(path: str | Path, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Decode one image file to an 8-bit "RGB" or "L" image (see `to_8bit`).

    The pixel limit is checked on the header, before anything is decoded, and the error names the file
    and its size; Pillow's own limit is lifted only for that header read.
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
        img.load()
        return to_8bit(img, background)


def to_8bit(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB" with 8 bits per channel, scaled rather than clipped.

    16-bit greyscale (I;16*) and 32-bit integer ("I") images are taken as 0..65535 and divided by 257;
    float images ("F") as 0..1. Pillow already reduces 16-bit RGB(A) PNG/TIFF to 8 bits. Transparent
    pixels (RGBA, LA, PA, palette or greyscale with a transparency key) are composited onto `background`
    (white by default, as image viewers show them), so a transparent background never turns black.
    """
    mode = img.mode
    if mode in ("RGB", "L"):
        if "transparency" not in img.info:
            return img.copy()
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = a * 255.0 if mode == "F" else a / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("L" if mode == "1" else "RGB")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """`to_8bit`, then greyscale expanded to RGB."""
    return to_8bit(img, background).convert("RGB")


def _open_image(item) -> Image.Image:
    path, box = (item, None) if isinstance(item, str) else item
    img = open_image(path)
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
            raise ValueError("classes and items must have the same length")
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
                warnings.warn(f"skipping unreadable image {item if isinstance(item, str) else item[0]}: {exc}")
        raise ValueError(f"class {self.classes[class_idx]!r} of {self.name} has no readable image; "
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
            raise ValueError("classes and arrays must have the same length")
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
        raise ValueError(f"dataset {ds.name!r} has no classes; expected ROOT/<class>/<image> folders")
    empty = [c for c, n in zip(ds.classes, ds.class_sizes()) if n == 0]
    if empty:
        shown = ", ".join(repr(c) for c in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise ValueError(f"{len(empty)} class(es) of {ds.name!r} have no readable images: {shown}; "
                         "add images or remove those classes")


def folder_dataset(root: str | Path, name: str | None = None, verify: bool = False) -> FileDataset:
    """Read ROOT/<class>/<image> (any common format, grayscale included). Classes are sorted by name.

    Empty files are skipped and counted at listing time; `verify=True` also decodes every image.
    macOS `._NAME` metadata files are ignored and counted in `ignored_metadata`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; give a class-per-folder dataset (ROOT/<class>/<image>) "
                         "or a named dataset (see `tinytrain data list`)")
    classes, items, skipped, ignored = [], [], 0, 0
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files, named = [], False
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                if is_metadata_file(f):
                    ignored += 1
                    continue
                named = True
                if f.stat().st_size == 0:
                    skipped += 1
                else:
                    files.append(str(f))
        if named:
            classes.append(d.name)
            items.append(files)
    if not classes:
        raise ValueError(f"no class folders with images under {root}; expected ROOT/<class>/<image> with "
                         f"extensions {', '.join(IMAGE_EXTENSIONS)}")
    ds = FileDataset(name or root.name, classes, items, skipped=skipped)
    ds.ignored_metadata = ignored
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
