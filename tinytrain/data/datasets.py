"""Image datasets as `class -> items`, the one shape every reader produces and the sampler consumes.

Two storage kinds cover everything: `FileDataset` (one image file per item, optionally a crop box:
class-per-folder data and the Meta-Dataset sources) and `ArrayDataset` (decoded uint8 arrays in memory
or memory-mapped: the pocket benchmark and QuickDraw), so that loading stays fast where it matters.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp")

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
        return self._load(class_idx, item_idx).convert("RGB")

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


def _open_image(item) -> Image.Image:
    path, box = (item, None) if isinstance(item, str) else item
    with Image.open(path) as img:
        img.load()
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        else:
            img = img.copy()
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
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; give a class-per-folder dataset (ROOT/<class>/<image>) "
                         "or a named dataset (see `tinytrain data list`)")
    classes, items, skipped = [], [], 0
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = []
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                if f.stat().st_size == 0:
                    skipped += 1
                else:
                    files.append(str(f))
        if files or any(f.suffix.lower() in IMAGE_EXTENSIONS for f in d.iterdir()):
            classes.append(d.name)
            items.append(files)
    if not classes:
        raise ValueError(f"no class folders with images under {root}; expected ROOT/<class>/<image> with "
                         f"extensions {', '.join(IMAGE_EXTENSIONS)}")
    ds = FileDataset(name or root.name, classes, items, skipped=skipped)
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
