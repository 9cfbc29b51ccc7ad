"""Which files of a folder are images, and the one reader of class folders (``ROOT/<class>/<image>``).

Every class-per-folder tree tinytrain reads goes through `read_class_folders`: the evaluation's folder
datasets (`tinytrain.data.datasets.folder_dataset`), the support and query folders of `tinytrain adapt`
and the Python API (`tinytrain.deploy.images`), and the training and held-out folders of `tinytrain bench
mcu` (`tinytrain.mcu.bench`). So the classes, the image files, what is skipped and every error for a
folder that cannot be used are the same whichever command reads it:

* the classes are the sub-folders of ROOT, sorted by name (code-point order, the same on every system);
  hidden ones (names starting with '.') are not classes; a class folder with a blank name is an error;
* the images of a class are the files directly in its folder, sorted: every file with an image suffix
  (IMAGE_EXTENSIONS, any case; one that does not decode is an error naming it when it is read), and every
  other file Pillow recognises by its content; macOS `._NAME` files are ignored and counted; hidden files,
  sub-folders and files Pillow does not recognise are skipped, and the skips are reported in one note
  with the reason (`report_skipped`); images lying directly in ROOT, beside the class folders, are
  reported in that note too, as they belong to no class;
* errors (one line naming the folder, and the flag or argument when given): ROOT missing or a file, no
  class folders (saying whether images lie directly in ROOT), a class folder with no image (saying what
  it holds), fewer classes than the caller needs, class folders that are not among the expected classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageFile, UnidentifiedImageError
from ..errors import BadInput

# Files with these suffixes are taken to be images: one that cannot be decoded is an error that names it.
# Any other file is read too when Pillow recognises it by its content (`probe_image`); one it does not
# recognise is skipped, and the skip is reported with the reason (`report_skipped`).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".ppm", ".pgm", ".pbm", ".pnm", ".bmp", ".dib",
                    ".gif", ".tif", ".tiff", ".webp", ".apng", ".tga", ".ico", ".qoi")
HEIF_SUFFIXES = (".heic", ".heif")
NOT_AN_IMAGE = "not an image Pillow can read"
NESTED_FOLDER = "a folder inside a class folder (images must sit directly in it)"
LOOSE_IMAGE = "an image beside the class folders, in no class (move it into the folder of its class)"
LAYOUT = "one sub-folder per class"



def is_metadata_file(path: str | Path) -> bool:
    """macOS writes `._NAME` (AppleDouble) files beside copied images on non-Mac disks: not images."""
    return Path(path).name.startswith("._")


def is_hidden(path: str | Path) -> bool:
    """A name starting with '.' (.DS_Store, .git, ._NAME): never a class, never an image."""
    return Path(path).name.startswith(".")


def is_image_file(path: Path) -> bool:
    """A file with an image suffix that is not hidden (nor a macOS `._` metadata file): the quick test for
    layouts whose folders are known to hold images (the Meta-Dataset sources)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(path) and path.is_file()


# --- which files of a folder are images -----------------------------------------------------------

@dataclass
class FolderListing:
    """The image files of a folder, and what was left out: `skipped` (path, reason) for every file or
    folder that is not read, besides macOS `._` metadata files, which are only counted (`metadata`)."""

    images: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    metadata: int = 0

    def __iadd__(self, other: "FolderListing") -> "FolderListing":
        self.images += other.images
        self.skipped += other.skipped
        self.metadata += other.metadata
        return self


def probe_image(path: Path) -> str | None:
    """None when Pillow recognises the file by its content (its header only is read), else why not."""
    try:
        if path.stat().st_size == 0:
            return "an empty file"
    except OSError as exc:
        return f"cannot be read ({(exc.strerror or str(exc)).lower()})"
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None       # a huge image is an image: reading it says how to allow it
    try:
        with Image.open(path) as img:
            if isinstance(img, ImageFile.StubImageFile):
                return f"a {img.format} file, which Pillow cannot decode without a plugin"
    except UnidentifiedImageError:
        if path.suffix.lower() in HEIF_SUFFIXES:
            return f"{NOT_AN_IMAGE} (HEIC/HEIF photos need the pillow-heif plugin, or convert them to JPEG)"
        return NOT_AN_IMAGE
    except Exception as exc:     # plugins raise many kinds for files that only look like theirs
        return f"{NOT_AN_IMAGE} ({type(exc).__name__})"
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    return None


def list_image_files(folder: str | Path, recursive: bool = True) -> FolderListing:
    """The image files under `folder`, sorted: every file with an image suffix (IMAGE_EXTENSIONS; one
    that does not decode is an error when it is read) and every other file Pillow recognises by its
    content. Hidden files and folders (names starting with '.') are skipped; macOS `._` files counted.
    Not `recursive` (a class folder): sub-folders are skipped (and listed)."""
    root = Path(folder)
    out = FolderListing()

    def walk(d: Path) -> None:
        for p in sorted(d.iterdir()):
            if is_metadata_file(p) and not p.is_dir():
                out.metadata += 1
            elif is_hidden(p):
                out.skipped.append((p, "a hidden folder" if p.is_dir() else "a hidden file"))
            elif p.is_dir():
                if recursive:
                    walk(p)
                else:
                    out.skipped.append((p, NESTED_FOLDER))
            elif not p.is_file():
                out.skipped.append((p, "not a regular file"))
            elif p.suffix.lower() in IMAGE_EXTENSIONS:
                out.images.append(p)
            else:
                why = probe_image(p)
                if why is None:
                    out.images.append(p)
                else:
                    out.skipped.append((p, why))

    walk(root)
    out.images.sort()
    return out


def skipped_message(skipped: list[tuple[Path, str]], shown: int = 5) -> str | None:
    """One line naming the files that were skipped and why (the first `shown`), or None."""
    if not skipped:
        return None
    names = [f"{p}{'/' if p.is_dir() else ''} ({why})" for p, why in skipped[:shown]]
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"skipped {len(skipped)} file(s) that are not read as images: {', '.join(names)}{more}"


def report_skipped(skipped: list[tuple[Path, str]]) -> None:
    """Say what was skipped, on the `tinytrain` logger (stderr unless logging is configured otherwise)."""
    msg = skipped_message(skipped)
    if msg:
        from ..progress import note
        note(msg)


# --- class folders --------------------------------------------------------------------------------

@dataclass
class ClassFolders:
    """A class-per-folder tree as `read_class_folders` found it.

    `images` maps each class (sorted by name) to its image files (sorted); `metadata` counts the macOS `._`
    files left out; `skipped` holds (path, why) for every other file or folder that is not read."""

    root: Path
    images: dict[str, list[Path]]
    metadata: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return list(self.images)

    @property
    def num_images(self) -> int:
        return sum(len(files) for files in self.images.values())

    def labelled(self, classes: Sequence[str] | None = None) -> tuple[list[Path], list[int]]:
        """Every image, class by class, with its label: the index of its class in `classes` (default: the
        folders' own sorted order). A class folder missing from `classes` is a ValueError; read with
        `known=` to have it refused, with the folder named, when the tree is read."""
        order = self.classes if classes is None else list(classes)
        paths: list[Path] = []
        labels: list[int] = []
        for name, files in self.images.items():
            if name not in order:
                raise BadInput(f"{self.root}: class folder {name!r} is not one of the classes {order}")
            paths += files
            labels += [order.index(name)] * len(files)
        return paths, labels


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def read_class_folders(root: str | Path, *, flag: str | None = None, what: str = "image folder",
                       min_classes: int = 1, known: Sequence[str] | None = None, known_as: str | None = None,
                       fix: str | None = None, report: bool = True) -> ClassFolders:
    """Read `ROOT/<class>/<image>` (see the module's docstring for what is a class and what is an image).

    `flag` (e.g. '--query', or 'query' for a Python argument) starts every error about ROOT, and names the
    tree in the error about one of its class folders; else `what` ('image folder', 'dataset folder') names
    ROOT when it does not exist. `min_classes`: fewer class folders is an error. `known`: the classes the
    folders must be among (a query's support set, a model's classes), described as `known_as` in the error
    ("in the support set (--support S: 'a', 'b')"), whose remedy is `fix`. The skipped files are reported
    (one note on the `tinytrain` logger) unless `report` is False.

    Raises FileNotFoundError when ROOT does not exist, ValueError for everything else."""
    root = Path(root)
    name = f"{flag} {root}" if flag else str(root)
    inside = f" (in {flag})" if flag else ""
    if not root.exists():
        raise FileNotFoundError(f"{flag + ' folder' if flag else what} {root} does not exist")
    if not root.is_dir():
        raise BadInput(f"{name} is a file, not a folder; give the folder that holds {LAYOUT} (DIR/<class name>/"
                         "<image>)")
    images: dict[str, list[Path]] = {}
    metadata, skipped = 0, []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p)):
        if not sub.name.strip():        # a saved model could not hold it (adapted.json refuses blank names)
            raise BadInput(f"class folder {str(sub)!r}{inside} has a blank name (only spaces or other white "
                             "space); rename it to the name of its class")
        listing = list_image_files(sub, recursive=False)
        metadata += listing.metadata
        if not listing.images:
            held = skipped_message(listing.skipped)
            raise BadInput(f"class folder {sub}{inside} holds no images{f' ({held})' if held else ''}; add images "
                             "(any format Pillow reads: JPEG, PNG, ...) directly in it, or remove the folder")
        skipped += listing.skipped
        images[sub.name] = listing.images
    loose = list_image_files(root, recursive=False).images
    if not images:
        held = (f"{_plural(len(loose), 'image')} directly, with no class sub-folders" if loose
                else "no class sub-folders")
        raise BadInput(f"{name} has no class folders: it holds {held}; lay images out as {root}/<class name>/"
                         f"<image>, {LAYOUT}")
    if len(images) < min_classes:
        found = ", ".join(map(repr, images))
        count = "a single class folder" if len(images) == 1 else f"only {len(images)} class folders"
        raise BadInput(f"{name} has {count} ({found}); few-shot adaptation needs at least "
                         f"{'two' if min_classes == 2 else min_classes}, {LAYOUT}")
    if known is not None:
        unknown = [c for c in images if c not in known]
        if unknown:
            raise BadInput(f"{name}: class folders {unknown} are not "
                             f"{known_as or 'among the classes ' + ', '.join(map(repr, known))}; "
                             f"{fix or 'rename or remove those folders'}")
    skipped = [(p, LOOSE_IMAGE) for p in loose] + skipped
    if report:
        report_skipped(skipped)
    return ClassFolders(root, images, metadata, skipped)
