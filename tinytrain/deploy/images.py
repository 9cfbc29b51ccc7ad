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

from ..data.datasets import IMAGE_EXTENSIONS, WHITE, ImageTooLarge, is_metadata_file, open_image, to_rgb
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..data.transforms import eval_transform as data_eval_transform

# The same formats the data area's folder reader accepts.
IMAGE_SUFFIXES = IMAGE_EXTENSIONS
NAMED_BACKGROUNDS = {"white": WHITE, "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}


@dataclass
class LabeledImages:
    """Images of one folder tree: x (N, 3, R, R) normalised, y (N,) indices into `classes`."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    paths: list[str] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)   # distinct (width, height) on disk
    ignored_metadata: int = 0                                   # macOS `._` files left out

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


def parse_background(text: str | tuple | list | None) -> tuple[int, int, int]:
    """'white' (default), 'black', 'grey', 'R,G,B' or '#RRGGBB' -> an RGB triple for transparent pixels."""
    if text is None:
        return WHITE
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        t = str(text).strip().lower()
        if t in NAMED_BACKGROUNDS:
            return NAMED_BACKGROUNDS[t]
        if t.startswith("#") and len(t) == 7:
            try:
                return tuple(int(t[i:i + 2], 16) for i in (1, 3, 5))
            except ValueError:
                parts = None
        else:
            parts = [v.strip() for v in t.split(",")]
    try:
        rgb = tuple(int(v) for v in parts)
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return rgb
    except (TypeError, ValueError):
        pass
    raise ValueError(f"--background {text!r} is not a colour; use white, black, grey, R,G,B (0-255) or #RRGGBB")


def open_rgb(path: str | Path, background: tuple[int, int, int] = WHITE):
    """Open one image as 8-bit RGB (16-bit scaled, transparency composited onto `background`), with an
    error that names the file."""
    from PIL import UnidentifiedImageError

    try:
        return to_rgb(open_image(path, background), background)
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        why = "not an image Pillow can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ValueError(f"cannot read image {path}: {why}; remove it or convert it to PNG/JPEG") from None


def load_images(paths: list[str | Path], resolution: int, background: tuple[int, int, int] = WHITE
                ) -> tuple[torch.Tensor, set[tuple[int, int]]]:
    """Load and transform image files -> (N, 3, R, R), plus the distinct original sizes. Any unreadable
    file is an error that names it."""
    if not paths:
        raise ValueError("no images given")
    transform = eval_transform(resolution)
    tensors, sizes = [], set()
    for p in paths:
        img = open_rgb(p, background)
        sizes.add(img.size)
        tensors.append(transform(img))
    return torch.stack(tensors), sizes


def load_images_skipping(paths: list[str | Path], resolution: int, background: tuple[int, int, int] = WHITE
                         ) -> tuple[torch.Tensor | None, list[Path], list[str]]:
    """As `load_images`, but an unreadable file is skipped: (x of the readable ones or None, their
    paths, one message per skipped file). For `predict`, where one bad file must not lose the rest."""
    transform = eval_transform(resolution)
    tensors, kept, errors = [], [], []
    for p in paths:
        try:
            tensors.append(transform(open_rgb(p, background)))
            kept.append(Path(p))
        except ValueError as exc:
            errors.append(str(exc))
    return (torch.stack(tensors) if tensors else None), kept, errors


def _files_under(folder: Path) -> tuple[list[Path], int]:
    """Image files below `folder` (recursively, sorted) and how many macOS `._` files were ignored."""
    found = [f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    images = sorted(f for f in found if not is_metadata_file(f))
    return images, len(found) - len(images)


def scan_class_folder(folder: str | Path) -> tuple[dict[str, list[Path]], int]:
    """`DIR/<class>/<image>` -> ({class: sorted image paths}, ignored `._` files); clear errors for
    missing, empty or flat folders."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"{root} is a file, not a folder; give the folder that holds one sub-folder per class "
                         "(DIR/<class name>/<image>)")
    classes, ignored = {}, 0
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files, n_meta = _files_under(sub)
        ignored += n_meta
        if not files:
            raise ValueError(f"class folder {sub} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...); "
                             "add images or remove the folder")
        classes[sub.name] = files
    if not classes:
        raise ValueError(f"{root} has no class sub-folders; lay images out as {root}/<class name>/<image>")
    return classes, ignored


def list_class_folder(folder: str | Path) -> dict[str, list[Path]]:
    """`DIR/<class>/<image>` -> {class: sorted image paths} (macOS `._` files left out)."""
    return scan_class_folder(folder)[0]


def load_class_folder(folder: str | Path, resolution: int, classes: list[str] | None = None,
                      background: tuple[int, int, int] = WHITE) -> LabeledImages:
    """Load a class-per-folder tree. With `classes`, labels follow that order and every folder
    must be one of them (a query class absent from the support set is an error)."""
    found, ignored = scan_class_folder(folder)
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
    x, sizes = load_images(paths, resolution, background)
    return LabeledImages(x, torch.tensor(labels, dtype=torch.long), list(classes), [str(p) for p in paths], sizes,
                         ignored)


GLOB_CHARS = set("*?[")


def collect_image_paths(items: list[str | Path]) -> tuple[list[Path], int]:
    """Image files from a mix of files and folders (folders are searched recursively), and how many
    macOS `._` files were left out. A name that does not exist is an error; one that still holds
    `*`, `?` or `[` is a shell pattern that matched nothing, and the error says so."""
    out: list[Path] = []
    ignored = 0
    for item in items:
        p = Path(item)
        if p.is_dir():
            files, n_meta = _files_under(p)
            out += files
            ignored += n_meta
        elif p.is_file():
            if is_metadata_file(p):
                ignored += 1
            else:
                out.append(p)
        elif GLOB_CHARS & set(str(item)):
            raise FileNotFoundError(f"no file matches {item} (the shell passed the pattern on unchanged); "
                                    "check the folder and the extension's case, e.g. *.jpg vs *.JPG")
        else:
            raise FileNotFoundError(f"image {p} does not exist")
    if not out:
        raise ValueError(f"no images found in {', '.join(str(i) for i in items)}"
                         + (f" ({ignored} macOS '._' metadata files ignored)" if ignored else "")
                         + f"; images need one of the extensions {', '.join(IMAGE_SUFFIXES)}")
    return out, ignored


def as_image_batch(images, resolution: int, background: tuple[int, int, int] = WHITE
                   ) -> tuple[torch.Tensor, list[str | None]]:
    """What the Python API's `predict` accepts -> (x (N, 3, R, R), the file name of each image or None).

    `images`: a file or folder path, a PIL image, a list of those, or an already normalised tensor
    (N, 3, R, R) / (3, R, R)."""
    from PIL import Image

    if isinstance(images, torch.Tensor):
        x = images.unsqueeze(0) if images.dim() == 3 else images
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (resolution, resolution):
            raise ValueError(f"a tensor of images must be (N, 3, {resolution}, {resolution}) and normalised; got "
                             f"{tuple(images.shape)}; or pass file paths / PIL images and they are prepared for you")
        return x.float(), [None] * len(x)
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ValueError("no images given")
    transform = eval_transform(resolution)
    tensors, names = [], []
    for item in items:
        if isinstance(item, Image.Image):
            tensors.append(transform(to_rgb(item, background)))
            names.append(None)
        elif isinstance(item, (str, Path)):
            paths, _ = collect_image_paths([item])
            for p in paths:
                tensors.append(transform(open_rgb(p, background)))
                names.append(str(p))
        else:
            raise ValueError(f"cannot classify a {type(item).__name__}; give file paths, folders or PIL images")
    return torch.stack(tensors), names
