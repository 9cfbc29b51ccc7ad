"""Images from a user's folders -> normalised tensors at the model's resolution.

A support set is a class-per-folder directory (``DIR/<class>/<image>``). Images of any size are
accepted: every image goes through the same eval transform (resize the shorter side, centre crop to
the resolution), which is also what the exported model expects (see `tinytrain.deploy.export`).
The data area's transform is used, so training and deployment see the same pixels.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..data.datasets import (IMAGE_EXTENSIONS, NOT_AN_IMAGE, WHITE, BadImage, FolderListing, check_image_shape,
                             is_metadata_file, list_image_files, open_image, report_skipped, skipped_message, to_rgb)
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..data.transforms import eval_transform as data_eval_transform
from ..data.transforms import normalize

# The suffixes the data area's folder reader takes as images; files with other names are read when
# Pillow recognises their content (see `tinytrain.data.datasets.list_image_files`).
IMAGE_SUFFIXES = IMAGE_EXTENSIONS
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


def eval_transform(resolution: int) -> Callable:
    """PIL RGB image -> normalised (3, R, R) tensor: the data area's transform, so training and
    deployment see the same pixels."""
    if resolution < 8:
        raise ValueError(f"resolution {resolution} is too small; use e.g. --resolution 128")
    return data_eval_transform(resolution)


def parse_background(text: str | tuple | list | None) -> tuple[int, int, int]:
    """'white' (default), 'black', 'grey', 'R,G,B' or '#RRGGBB' -> an RGB triple for transparent pixels.

    R,G,B (text or a tuple/list) are integers 0-255, or, when any of them is written as a fraction
    (0.5, 1.0), fractions 0-1 of full intensity for all three: (0.5, 0.5, 0.5) is mid grey, (1.0, 0, 0)
    red. Anything else is refused."""
    if text is None:
        return WHITE
    bad = ValueError(f"--background {text!r} is not a colour; use white, black, grey, R,G,B (integers 0-255, or "
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
        raise ValueError(f"--background {text!r}: written with a decimal point the values are fractions 0-1; give "
                         "fractions 0-1 (0.5,0.5,0.5) or integers 0-255 (128,128,128)")
    if all(0 <= int(v) <= 255 for v in values):
        return tuple(int(v) for v in values)
    raise bad


def open_rgb(path: str | Path, background: tuple[int, int, int] = WHITE):
    """Open one image as upright 8-bit RGB (EXIF orientation applied, 16-bit and float scaled, transparency
    composited onto `background`), with an error that names the file."""
    from PIL import UnidentifiedImageError

    try:
        return to_rgb(open_image(path, background), background, what=f"image {path}")
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        why = NOT_AN_IMAGE if isinstance(exc, UnidentifiedImageError) else (str(exc) or type(exc).__name__)
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


def _files_under(folder: Path) -> FolderListing:
    """The images below `folder` (recursively, sorted; see `list_image_files`) and what was left out."""
    return list_image_files(folder, recursive=True)


def _describe_skipped(listing: FolderListing) -> str:
    msg = skipped_message(listing.skipped)
    return f" ({msg})" if msg else ""


def scan_class_folder(folder: str | Path, report: bool = True, flag: str | None = None
                      ) -> tuple[dict[str, list[Path]], int, list[tuple[Path, str]]]:
    """`DIR/<class>/<image>` -> ({class: sorted image paths}, ignored `._` files, [(file, why) skipped]);
    clear errors for missing, empty or flat folders, naming `flag` (e.g. '--query') when given. Skipped files
    are reported unless `report` is False."""
    root = Path(folder)
    name = f"{flag} {root}" if flag else str(root)
    if not root.exists():
        raise FileNotFoundError(f"{flag + ' folder' if flag else 'image folder'} {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"{name} is a file, not a folder; give the folder that holds one sub-folder per class "
                         "(DIR/<class name>/<image>)")
    classes, ignored, skipped = {}, 0, []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not sub.name.strip():        # a saved model could not hold it (adapted.json refuses blank names)
            raise ValueError(f"class folder {str(sub)!r}{f' (in {flag})' if flag else ''} has a blank name (only "
                             "spaces or other white space); rename it to the name of its class")
        listing = _files_under(sub)
        ignored += listing.metadata
        if not listing.images:
            raise ValueError(f"class folder {sub}{f' (in {flag})' if flag else ''} holds no images"
                             f"{_describe_skipped(listing)}; add images (any format Pillow reads: JPEG, PNG, ...) "
                             "or remove the folder")
        skipped += listing.skipped
        classes[sub.name] = listing.images
    if not classes:
        loose = len(list_image_files(root, recursive=False).images)
        held = (f"it holds {loose} image{'s' if loose != 1 else ''} directly, with no class sub-folders" if loose
                else "it holds no class sub-folders")
        raise ValueError(f"{name}: {held}; lay images out as {root}/<class name>/<image>, one sub-folder per class")
    if report:
        report_skipped(skipped)
    return classes, ignored, skipped


def check_task_folders(support_dir: str | Path, query_dir: str | Path | None,
                       flags: tuple[str, str] = ("--support", "--query")) -> None:
    """Before any model is loaded: the support folder (at least two classes, each with an image) and the
    optional query folder (its classes among the support's) can be read as class folders; else one line
    naming the flag and the folder."""
    support, _, _ = scan_class_folder(support_dir, report=False, flag=flags[0])
    if len(support) < 2:
        raise ValueError(f"{flags[0]} {support_dir} has a single class folder ({next(iter(support))!r}); few-shot "
                         "adaptation needs at least two, one sub-folder per class")
    if query_dir is None:
        return
    query, _, _ = scan_class_folder(query_dir, report=False, flag=flags[1])
    unknown = [c for c in query if c not in support]
    if unknown:
        raise ValueError(f"{flags[1]} {query_dir}: class folders {unknown} are not in the support set ({flags[0]} "
                         f"{support_dir}: {', '.join(map(repr, support))}); add them to {flags[0]} or remove them "
                         f"from {flags[1]}")


def list_class_folder(folder: str | Path) -> dict[str, list[Path]]:
    """`DIR/<class>/<image>` -> {class: sorted image paths} (macOS `._` files left out, other files that
    are not images reported)."""
    return scan_class_folder(folder)[0]


def load_class_folder(folder: str | Path, resolution: int, classes: list[str] | None = None,
                      background: tuple[int, int, int] = WHITE) -> LabeledImages:
    """Load a class-per-folder tree. With `classes`, labels follow that order and every folder
    must be one of them (a query class absent from the support set is an error)."""
    found, ignored, skipped = scan_class_folder(folder)
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
                         ignored, [(str(p), why) for p, why in skipped])


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
            listing = _files_under(p)
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
        raise ValueError(f"no images found in {', '.join(str(i) for i in items)}"
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
        raise ValueError(f"a tensor of images must be (N, 3, {resolution}, {resolution}) (channels first): uint8 "
                         f"pixels 0-255 or a normalised float tensor; got shape {tuple(images.shape)}; or pass file "
                         "paths / PIL images and they are prepared for you")
    if x.shape[0] == 0:
        raise ValueError("the tensor of images holds no image (batch size 0)")
    if x.dtype == torch.uint8:
        return normalize(x.float() / 255.0)
    if not x.dtype.is_floating_point or x.dtype.is_complex:
        raise ValueError(f"a tensor of images must be uint8 (pixels 0-255) or floating point (normalised with the "
                         f"model's mean/std); got {x.dtype}: for 0-255 pixels use x.to(torch.uint8), for 0-1 pixels "
                         "(x * 255).round().to(torch.uint8)")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"the tensor of images holds {int((~torch.isfinite(x)).sum())} NaN or infinite values; "
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
        raise ValueError("no images given")
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
            raise ValueError(f"cannot classify a {type(item).__name__}; give file paths, folders or PIL images")
    return torch.stack(tensors), names
