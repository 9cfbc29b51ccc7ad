"""Real photographs for distillation, from what the package registries ship.

The tiny backbones have no ImageNet weights here; `tinytrain distill` teaches them natural-image
features from an ImageNet teacher shown heavily augmented patches of a few photographs (Asano & Saeed,
ICLR 2023). scikit-image bundles a handful of real photographs with their licences in its docstrings;
this module names them, keeps the ones held back for evaluation out of training, and turns `--images`
arguments (files, folders or `skimage:NAME`) into a checked list of image files.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .datasets import _open_image
from .folders import list_image_files, report_skipped, skipped_message
from ..errors import BadInput


@dataclass(frozen=True)
class Photo:
    name: str
    file: str
    licence: str
    content: str


# The colour photographs scikit-image 0.26 ships in skimage/data (licences from skimage.data's docstrings).
SKIMAGE_PHOTOS = {p.name: p for p in [
    Photo("astronaut", "astronaut.png", "public domain (NASA)", "astronaut Eileen Collins, flag, spacecraft model"),
    Photo("chelsea", "chelsea.png", "CC0 (Stefan van der Walt)", "a cat (Chelsea)"),
    Photo("coffee", "coffee.png", "CC0 (Rachel Michetti)", "a cup of coffee on a saucer"),
    Photo("rocket", "rocket.jpg", "public domain (SpaceX)", "a rocket on the launch pad"),
    Photo("hubble_deep_field", "hubble_deep_field.jpg", "public domain (NASA)", "galaxies (Hubble deep field)"),
    Photo("retina", "retina.jpg", "CC0 1.0 (Häggström)", "a human retina"),
    Photo("immunohistochemistry", "ihc.png", "no known copyright restrictions", "stained tissue (microscopy)"),
    Photo("motorcycle_left", "motorcycle_left.png", "Middlebury 2014 stereo benchmark (Scharstein et al.)",
          "a motorcycle in a cluttered lab"),
]}

# Held back for evaluation by the issue that asked for distillation: never a training image.
EVALUATION_ONLY = ("brick.png", "grass.png", "gravel.png")

DEFAULT_TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
                        "immunohistochemistry")
DEFAULT_HELDOUT_PHOTOS = ("motorcycle_left",)


def skimage_data_dir() -> Path:
    try:
        import skimage
    except ImportError as exc:
        raise BadInput("skimage:NAME images need scikit-image (`pip install scikit-image`)") from exc
    return Path(skimage.__file__).resolve().parent / "data"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _evaluation_only_hashes() -> set[str]:
    try:
        base = skimage_data_dir()
    except ValueError:
        return set()
    return {sha256_file(base / f) for f in EVALUATION_ONLY if (base / f).is_file()}


def _expand(spec: str) -> list[Path]:
    if spec.startswith("skimage:"):
        name = spec.removeprefix("skimage:")
        if name not in SKIMAGE_PHOTOS:
            raise BadInput(f"--images {spec}: unknown scikit-image photograph; use one of "
                             f"{', '.join('skimage:' + n for n in SKIMAGE_PHOTOS)}")
        return [skimage_data_dir() / SKIMAGE_PHOTOS[name].file]
    p = Path(spec).expanduser()
    if p.is_dir():
        listing = list_image_files(p)           # every file Pillow reads, whatever its suffix
        if not listing.images:
            why = skipped_message(listing.skipped)
            raise BadInput(f"--images {spec}: the folder holds no image file Pillow reads"
                             + (f" ({why})" if why else ""))
        report_skipped(listing.skipped)
        return listing.images
    if p.is_file():
        return [p]
    raise BadInput(f"--images {spec}: no such file or folder (give image files, folders, or skimage:NAME)")


def resolve_images(specs: list[str] | tuple[str, ...], flag: str = "--images") -> list[Path]:
    """Image files named by `specs`, checked readable, with the evaluation-only textures refused."""
    if not specs:
        raise BadInput(f"{flag} is empty; give at least one photograph (a file, a folder or skimage:NAME)")
    banned = _evaluation_only_hashes()
    out: list[Path] = []
    for spec in specs:
        for f in _expand(str(spec)):
            if f.name in EVALUATION_ONLY and banned and sha256_file(f) in banned:
                raise BadInput(f"{flag}: {f} is scikit-image's {f.stem} texture, held back for evaluation; "
                                 "leave it out")
            try:
                with Image.open(f) as img:
                    img.verify()
            except Exception as exc:   # PIL raises many kinds for a broken file
                raise BadInput(f"{flag}: {f} is not a readable image ({type(exc).__name__}); remove or replace it")
            if f.resolve() not in {o.resolve() for o in out}:
                out.append(f)
    return out


def load_photos(paths: list[Path], min_side: int = 32) -> list[Image.Image]:
    """Decoded RGB images; refuses images too small to cut patches from."""
    imgs = []
    for p in paths:
        img = _open_image(str(p)).convert("RGB")
        if min(img.size) < min_side:
            raise BadInput(f"{p} is {img.size[0]}x{img.size[1]} pixels; distillation needs photographs of at "
                             f"least {min_side} pixels on the shorter side")
        imgs.append(img)
    return imgs


def describe(paths: list[Path]) -> list[dict]:
    """What a run records about its images: the file name, its sha256, and the licence when known."""
    by_file = {p.file: p for p in SKIMAGE_PHOTOS.values()}
    try:
        base = skimage_data_dir()
    except ValueError:
        base = None
    out = []
    for p in paths:
        known = by_file.get(p.name) if base is not None and p.resolve().parent == base else None
        out.append({"file": p.name, "sha256": sha256_file(p),
                    "source": f"skimage:{known.name}" if known else str(p),
                    "licence": known.licence if known else "as supplied by the user"})
    return out
