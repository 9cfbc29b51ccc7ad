"""Data: readers (class-per-folder, the nine Meta-Dataset sources, the pocket benchmark), the episode
spec and sampler, transforms without torchvision, and `open_dataset`, the one entry point by name or path.

Importing the package is cheap: EpisodeSpec (pure Python) loads at once, everything that needs torch or
NumPy when first used."""
from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from .episodes import EpisodeSpec
from ..errors import BadInput

if TYPE_CHECKING:
    from .datasets import ImageDataset

_LAZY = {"transforms": ("transforms", None),
         **{n: ("datasets", n) for n in ("ArrayDataset", "ClassificationView", "FileDataset", "ImageDataset",
                                         "folder_dataset")},
         "IMAGE_EXTENSIONS": ("folders", "IMAGE_EXTENSIONS"), "read_class_folders": ("folders", "read_class_folders"),
         "METADATASET_SOURCES": ("metadataset", "READERS"), "open_source": ("metadataset", "open_source"),
         **{n: ("sampler", n) for n in ("EpisodeSampler", "episode_stats", "load_episode_file", "load_task",
                                        "save_episode_file")},
         **{n: ("types", n) for n in ("Episode", "Task", "load_episodes", "save_episodes")}}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


SPLITS = ("train", "val", "test", "all")

__all__ = ["open_dataset", "dataset_names", "ImageDataset", "FileDataset", "ArrayDataset", "ClassificationView",
           "folder_dataset", "read_class_folders", "open_source", "EpisodeSampler", "episode_stats", "load_task",
           "save_episode_file", "load_episode_file", "Episode", "Task", "save_episodes", "load_episodes", "transforms",
           "METADATASET_SOURCES", "IMAGE_EXTENSIONS", "EpisodeSpec"]


def dataset_names() -> list[str]:
    """Named datasets `open_dataset` accepts besides folders: pocket domains and '<source>:<path>'."""
    from .metadataset import READERS as METADATASET_SOURCES
    from .pocket import POCKET_DOMAINS
    return list(POCKET_DOMAINS) + [f"{s}:<path>" for s in METADATASET_SOURCES]


def open_dataset(spec: str, split: str = "all", root: str | None = None) -> ImageDataset:
    """Open a dataset by folder path, pocket domain name, or '<meta-dataset source>:<path>'.

    `root` overrides where the pocket benchmark lives (default: `pocket.pocket_root()`).
    """
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    from .datasets import folder_dataset
    from .metadataset import READERS as METADATASET_SOURCES
    from .metadataset import open_source
    from .pocket import POCKET_DOMAINS, open_pocket
    spec = str(spec)
    if spec in POCKET_DOMAINS:
        return open_pocket(spec, split, root)
    if not spec.strip():       # Path('') is the current folder: never read it by accident
        raise BadInput(f"the dataset is empty text; give a class-per-folder path or one of {', '.join(dataset_names())}")
    source, sep, path = spec.partition(":")
    if sep and source in METADATASET_SOURCES:
        return open_source(source, path, split)
    p = Path(spec).expanduser()
    if p.is_dir():
        if split != "all":
            raise BadInput(f"a plain folder has no class splits; use --split all (got {split!r}) or split "
                             "the folder yourself")
        return folder_dataset(p)
    named = ", ".join(dataset_names())
    if p.exists():
        raise BadInput(f"dataset {spec} is a file, not a folder; give a folder that holds one sub-folder per class "
                         f"(ROOT/<class>/<image>), or one of {named}")
    if sep and "/" not in source and "\\" not in source:
        close = difflib.get_close_matches(source, METADATASET_SOURCES, n=1)
        raise BadInput(f"unknown dataset source {source!r} in {spec!r}"
                         + (f" (did you mean {close[0]}:{path}?)" if close else "")
                         + f"; the sources are {', '.join(f'{s}:<path>' for s in METADATASET_SOURCES)}")
    if any(c in spec for c in "/\\") or spec.startswith((".", "~")):
        raise BadInput(f"dataset folder {spec} does not exist; check the path (named datasets: {named})")
    close = difflib.get_close_matches(spec, list(POCKET_DOMAINS), n=1)
    raise BadInput(f"unknown dataset {spec!r}: no folder of that name here"
                     + (f", and not a named dataset (did you mean {close[0]}?)" if close else
                        f", and not one of {named}"))
