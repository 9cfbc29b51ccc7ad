"""Images from a user's folders -> normalised tensors at the model's resolution.

A support set is a class-per-folder directory (``DIR/<class>/<image>``). Images of any size are
accepted: every image goes through the same eval transform (resize the shorter side, centre crop to
the resolution), which is also what the exported model expects (see `tinytrain.deploy.export`).
The data area's transform is used, so training and deployment see the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..data.datasets import IMAGE_EXTENSIONS
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..data.transforms import eval_transform as data_eval_transform

# The same formats the data area's folder reader accepts.
IMAGE_SUFFIXES = IMAGE_EXTENSIONS


@dataclass
class LabeledImages:
    """Images of one folder tree: x (N, 3, R, R) normalised, y (N,) indices into `classes`."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    paths: list[str] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)   # distinct (width, height) on disk

    @property
    def mixed_sizes(self) -> bool:
        return len(self.sizes) > 1


def normalisation() -> dict:
    """Mean/std the eval transform applies (recorded in saved models and folded into exports)."""
    return {"mean": [float(v) for v in IMAGENET_MEAN], "std": [float(v) for v in IMAGENET_STD]}


def eval_transform(resolution: int) -> Callable:
    """PIL RGB image -> normalised (3, R, R) tensor: the data area's transform, so training and
    deployment see the same pixels."""
    if resolution < 8:
        raise ValueError(f"resolution {resolution} is too small; use e.g. --resolution 128")
    return data_eval_transform(resolution)


def open_rgb(path: str | Path):
    """Open one image as RGB, with an error that names the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}; remove it or convert it to PNG/JPEG") from None


def load_images(paths: list[str | Path], resolution: int) -> tuple[torch.Tensor, set[tuple[int, int]]]:
    """Load and transform image files -> (N, 3, R, R), plus the distinct original sizes."""
    if not paths:
        raise ValueError("no images given")
    transform = eval_transform(resolution)
    tensors, sizes = [], set()
    for p in paths:
        img = open_rgb(p)
        sizes.add(img.size)
        tensors.append(transform(img))
    return torch.stack(tensors), sizes


def list_class_folder(folder: str | Path) -> dict[str, list[Path]]:
    """`DIR/<class>/<image>` -> {class: sorted image paths}; clear errors for empty or flat folders."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"class folder {sub} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...); "
                             "add images or remove the folder")
        classes[sub.name] = files
    if not classes:
        raise ValueError(f"{root} has no class sub-folders; lay images out as {root}/<class name>/<image>")
    return classes


def load_class_folder(folder: str | Path, resolution: int, classes: list[str] | None = None) -> LabeledImages:
    """Load a class-per-folder tree. With `classes`, labels follow that order and every folder
    must be one of them (a query class absent from the support set is an error)."""
    found = list_class_folder(folder)
    if classes is None:
        classes = list(found)
    else:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise ValueError(f"{folder}: classes {unknown} are not in the support set {classes}; "
                             "add them to the support folder or remove them from the query folder")
    paths, labels = [], []
    for name, files in found.items():
        paths += files
        labels += [classes.index(name)] * len(files)
    x, sizes = load_images(paths, resolution)
    return LabeledImages(x, torch.tensor(labels, dtype=torch.long), list(classes), [str(p) for p in paths], sizes)


def collect_image_paths(items: list[str | Path]) -> list[Path]:
    """Image files from a mix of files and folders (folders are searched recursively)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"image {p} does not exist")
    if not out:
        raise ValueError(f"no images found in {[str(i) for i in items]}")
    return out
