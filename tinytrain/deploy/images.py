"""Images from a user's folders -> normalised tensors at the model's resolution.

A support set is a class-per-folder directory (``DIR/<class>/<image>``), read by the data area's one
class-folder reader (`tinytrain.data.folders.read_class_folders`), so `adapt`, `eval` and `bench mcu` take
the same classes and files and refuse the same folders with the same errors. Images of any size are
accepted: every image goes through the data area's eval transform (`tinytrain.data.transforms.eval_transform`:
resize the shorter side, centre crop to the resolution), which is also what the exported model expects
(see `tinytrain.deploy.export`), so training and deployment see the same pixels.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.datasets import WHITE, check_image_shape, open_rgb, to_rgb
from ..data.folders import (ClassFolders, is_metadata_file, list_image_files, read_class_folders, report_skipped,
                            skipped_message)
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, normalize
from ..errors import BadInput

NAMED_BACKGROUNDS = {"white": WHITE, "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}


@dataclass
class LabeledImages:
    """Images of one folder tree: x (N, 3, R, R) normalised, y (N,) indices into `classes`."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    paths: list[str] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)   # distinct (width, height), upright
    ignored_metadata: int = 0                                   # macOS `._` files left out
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (file, why) not read as images

    @property
    def mixed_sizes(self) -> bool:
        return len(self.sizes) > 1


def normalisation() -> dict:
    """Mean/std the eval transform applies (recorded in saved models and folded into exports)."""
    return {"mean": [float(v) for v in IMAGENET_MEAN], "std": [float(v) for v in IMAGENET_STD]}


def parse_background(text: str | tuple | list | None) -> tuple[int, int, int]:
    """'white' (default), 'black', 'grey', 'R,G,B' or '#RRGGBB' -> an RGB triple for transparent pixels.

    R,G,B (text or a tuple/list) are integers 0-255, or, when any of them is written as a fraction
    (0.5, 1.0), fractions 0-1 of full intensity for all three: (0.5, 0.5, 0.5) is mid grey, (1.0, 0, 0)
    red. Anything else is refused."""
    if text is None:
        return WHITE
    bad = BadInput(f"--background {text!r} is not a colour; use white, black, grey, R,G,B (integers 0-255, or "
                     "fractions 0-1 such as 0.5,0.5,0.5) or #RRGGBB")
    if isinstance(text, (tuple, list)):
        parts = list(text)
    elif isinstance(text, str):
        t = text.strip().lower()
        if t in NAMED_BACKGROUNDS:
            return NAMED_BACKGROUNDS[t]
        if t.startswith("#"):
            if len(t) == 7 and all(c in "0123456789abcdef" for c in t[1:]):
                return tuple(int(t[i:i + 2], 16) for i in (1, 3, 5))
            raise bad
        parts = [v.strip() for v in t.split(",")]
    else:
        raise bad
    if len(parts) != 3:
        raise bad
    values = []
    for v in parts:
        if isinstance(v, str):
            try:
                v = int(v) if v.lstrip("+-").isdigit() else float(v)
            except ValueError:
                raise bad from None
        try:
            finite = math.isfinite(float(v))
        except (OverflowError, TypeError, ValueError):     # e.g. an integer of 400 digits
            finite = False
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not finite:
            raise bad
        values.append(v)
    if any(not isinstance(v, numbers.Integral) for v in values):
        if all(0.0 <= float(v) <= 1.0 for v in values):
            return tuple(int(round(float(v) * 255)) for v in values)
        raise BadInput(f"--background {text!r}: written with a decimal point the values are fractions 0-1; give "
                         "fractions 0-1 (0.5,0.5,0.5) or integers 0-255 (128,128,128)")
    if all(0 <= int(v) <= 255 for v in values):
        return tuple(int(v) for v in values)
    raise bad


def load_images(paths: list[str | Path], resolution: int, background: tuple[int, int, int] = WHITE
                ) -> tuple[torch.Tensor, set[tuple[int, int]]]:
    """Load and transform image files -> (N, 3, R, R), plus the distinct original sizes. Any unreadable
    file is an error that names it."""
    if not paths:
        raise BadInput("no images given")
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


def check_task_folders(support_dir: str | Path, query_dir: str | Path | None,
                       flags: tuple[str, str] = ("--support", "--query")) -> tuple[ClassFolders, ClassFolders | None]:
    """Before any model is loaded: the support folder (at least two classes, each with an image) and the
    optional query folder (its classes among the support's) can be read as class folders; else one line
    naming the flag and the folder. Returns what was read, for `load_class_folder` to load without listing
    the folders again; nothing is reported here: the notes come when the images are loaded."""
    support = read_class_folders(support_dir, flag=flags[0], min_classes=2, report=False)
    if query_dir is None:
        return support, None
    query = read_class_folders(query_dir, flag=flags[1], report=False, known=support.classes,
                               known_as=f"in the support set ({flags[0]} {support_dir}: "
                                        f"{', '.join(map(repr, support.classes))})",
                               fix=f"add them to {flags[0]} or remove them from {flags[1]}")
    return support, query


def load_class_folder(folder: str | Path | ClassFolders, resolution: int, classes: list[str] | None = None,
                      background: tuple[int, int, int] = WHITE) -> LabeledImages:
    """Load a class-per-folder tree (a path, or a tree `check_task_folders` already read). With `classes`,
    labels follow that order and every folder must be one of them (a query class absent from the support
    set is an error)."""
    if isinstance(folder, ClassFolders):
        found = folder
        report_skipped(found.skipped)
    else:
        found = read_class_folders(folder, known=classes,
                                   known_as=f"in the support set {list(classes)}" if classes is not None else None,
                                   fix="add them to the support folder or remove them from the query folder")
    classes = found.classes if classes is None else list(classes)
    paths, labels = found.labelled(classes)
    x, sizes = load_images(paths, resolution, background)
    return LabeledImages(x, torch.tensor(labels, dtype=torch.long), list(classes), [str(p) for p in paths], sizes,
                         found.metadata, [(str(p), why) for p, why in found.skipped])


GLOB_CHARS = set("*?[")


def collect_image_paths(items: list[str | Path]) -> tuple[list[Path], int]:
    """Image files from a mix of files and folders (folders are searched recursively, and every file
    Pillow reads is taken; the others are reported with the reason), and how many macOS `._` files were
    left out. A file named explicitly is always taken (and an error when read if it is not an image).
    A name that does not exist is an error; one that still holds `*`, `?` or `[` is a shell pattern that
    matched nothing, and the error says so."""
    out: list[Path] = []
    ignored = 0
    skipped: list[tuple[Path, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            listing = list_image_files(p, recursive=True)
            out += listing.images
            ignored += listing.metadata
            skipped += listing.skipped
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
        msg = skipped_message(skipped)
        raise BadInput(f"no images found in {', '.join(str(i) for i in items)}"
                         + (f" ({ignored} macOS '._' metadata files ignored)" if ignored else "")
                         + (f"; {msg}" if msg else "")
                         + "; give image files Pillow reads (JPEG, PNG, TIFF, WebP, ...)")
    report_skipped(skipped)
    return out, ignored


def _tensor_batch(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """A tensor given to `predict`/`adapt` -> a normalised float batch, or a one-line ValueError.

    uint8: raw pixels 0-255, (N, 3, R, R) or (3, R, R), normalised here as image files are. Floating
    point: already normalised (mean/std applied, as the eval transform leaves images). Other integer,
    bool or complex tensors, and NaN or infinite values, are refused."""
    x = images.unsqueeze(0) if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (resolution, resolution):
        raise BadInput(f"a tensor of images must be (N, 3, {resolution}, {resolution}) (channels first): uint8 "
                         f"pixels 0-255 or a normalised float tensor; got shape {tuple(images.shape)}; or pass file "
                         "paths / PIL images and they are prepared for you")
    if x.shape[0] == 0:
        raise BadInput("the tensor of images holds no image (batch size 0)")
    if x.dtype == torch.uint8:
        return normalize(x.float() / 255.0)
    if not x.dtype.is_floating_point or x.dtype.is_complex:
        raise BadInput(f"a tensor of images must be uint8 (pixels 0-255) or floating point (normalised with the "
                         f"model's mean/std); got {x.dtype}: for 0-255 pixels use x.to(torch.uint8), for 0-1 pixels "
                         "(x * 255).round().to(torch.uint8)")
    x = x.float()
    if not torch.isfinite(x).all():
        raise BadInput(f"the tensor of images holds {int((~torch.isfinite(x)).sum())} NaN or infinite values; "
                         "give finite values (uint8 pixels 0-255, or normalised floats)")
    if x.min() >= 0 and x.max() <= 1 and x.numel() > 3 * resolution * resolution // 2:
        import warnings
        warnings.warn("every value of the float tensor of images is in [0, 1]: predict takes float tensors as "
                      "normalised (mean/std already applied, as the eval transform leaves them), not as 0-1 pixels; "
                      "for 0-1 pixels pass (x * 255).round().to(torch.uint8)", stacklevel=3)
    return x


def as_image_batch(images, resolution: int, background: tuple[int, int, int] = WHITE
                   ) -> tuple[torch.Tensor, list[str | None]]:
    """What the Python API's `predict` accepts -> (x (N, 3, R, R), the file name of each image or None).

    `images`: a file or folder path, a PIL image, a list of those, or a tensor (N, 3, R, R) / (3, R, R):
    uint8 for raw pixels 0-255, floating point for images already normalised (see `_tensor_batch`)."""
    from PIL import Image

    if isinstance(images, torch.Tensor):
        x = _tensor_batch(images, resolution)
        return x, [None] * len(x)
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise BadInput("no images given")
    transform = eval_transform(resolution)
    tensors, names = [], []
    for k, item in enumerate(items):
        if isinstance(item, Image.Image):
            what = f"PIL image {k} (mode {item.mode})"
            check_image_shape(*item.size, what)
            tensors.append(transform(to_rgb(item, background, what=what)))
            names.append(None)
        elif isinstance(item, (str, Path)):
            paths, _ = collect_image_paths([item])
            for p in paths:
                tensors.append(transform(open_rgb(p, background)))
                names.append(str(p))
        else:
            raise BadInput(f"cannot classify a {type(item).__name__}; give file paths, folders or PIL images")
    return torch.stack(tensors), names
