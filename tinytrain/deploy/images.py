"""Images from a user's folders -> normalised tensors at the model's resolution.

A support set is a class-per-folder directory (``DIR/<class>/<image>``). Images of any size are
accepted: every image goes through the same eval transform (resize the shorter side, centre crop to
the resolution), which is also what the exported model expects (see `tinytrain.deploy.export`).
The data area's reader and transform are used when they exist, so training and deployment see the
same pixels; the small local fallback keeps this module usable on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    try:
        from ..data import transforms as T
        mean = getattr(T, "MEAN", None) or getattr(T, "IMAGENET_MEAN", None)
        std = getattr(T, "STD", None) or getattr(T, "IMAGENET_STD", None)
        if mean is not None and std is not None:
            return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    except ImportError:
        pass
    return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def _fallback_transform(resolution: int) -> Callable:
    import numpy as np
    from PIL import Image

    norm = normalisation()
    mean = torch.tensor(norm["mean"])[:, None, None]
    std = torch.tensor(norm["std"])[:, None, None]

    def transform(img: "Image.Image") -> torch.Tensor:
        w, h = img.size
        s = resolution / min(w, h)
        img = img.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
        t = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        return (t - mean) / std

    return transform


def eval_transform(resolution: int) -> Callable:
    """PIL RGB image -> normalised (3, R, R) tensor; the data area's transform when available."""
    if resolution < 8:
        raise ValueError(f"resolution {resolution} is too small; use e.g. --resolution 128")
    try:
        from ..data.transforms import eval_transform as data_eval_transform
        return data_eval_transform(resolution)
    except ImportError:
        return _fallback_transform(resolution)


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
